"""The kernel manager of headless notebook runs: the kernel talks over local IPC sockets.

Over TCP (jupyter's default) every kernel warns that its traffic is unencrypted plain text, in
every run's log; IPC sockets are files in a private temporary folder, reachable by this user
only, so there is nothing to warn about and no TCP port is opened.
"""
from __future__ import annotations

import os
import shutil
import tempfile

from jupyter_client.manager import KernelManager


class IPCKernelManager(KernelManager):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._socket_dir = tempfile.mkdtemp(prefix="rlalm-kernel-")
        os.chmod(self._socket_dir, 0o700)
        self.transport = "ipc"
        self.ip = os.path.join(self._socket_dir, "kernel")

    def cleanup_resources(self, restart: bool = False) -> None:
        super().cleanup_resources(restart=restart)
        if not restart:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
