"""The notebook runner: parameter profiles (:mod:`.profiles`) and papermill execution of the
numbered notebooks into per-profile output folders (:mod:`.reproduce`)."""
