"""The result type every answer normalizer returns (rule-based and LLM-based alike)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, Sequence

Kind = Literal["choice", "idk", "invalid"]
IDK_LABEL = "IDK"
INVALID_LABEL = "invalid"  # the decision of an output that asserts no option and refuses nothing


@dataclass(frozen=True)
class Normalized:
    kind: Kind  # 'choice': one of the options; 'idk': a refusal; 'invalid': nothing could be mapped
    choice: str | None = None  # the option text when kind == 'choice'
    method: str = ""  # which rule (or 'llm', 'llm-cache') decided, for auditing

    @property
    def label(self) -> str:
        """What the official MMAU scorer should see in ``model_output``."""
        if self.kind == "choice":
            return self.choice or ""
        return IDK_LABEL if self.kind == "idk" else ""

    @property
    def decision(self) -> str:
        """The decision in words: the option text, ``IDK`` or ``invalid`` (judge set, sample logs)."""
        if self.kind == "choice":
            return self.choice or ""
        return IDK_LABEL if self.kind == "idk" else INVALID_LABEL


class Normalizer(Protocol):
    name: str

    def normalize_many(self, outputs: Sequence[str], choices: Sequence[Sequence[str]]) -> list[Normalized]: ...


class LLMConfigError(RuntimeError):
    """An LLM normalizer cannot be built as asked (e.g. neither a key nor a base URL)."""


class LLMRefusedError(RuntimeError):
    """The endpoint refused the requests (bad key, no permission, unknown model, no quota)."""
