"""Host checks: what this machine needs to run boxes, without starting one."""

from __future__ import annotations

import json
import os
from typing import Any, Optional

from . import _ffi


def doctor(home: Optional[str] = None) -> dict[str, Any]:
    """Checks QEMU (path, version), KVM, the guest kernel VM boxes would boot,
    /dev/net/tun, user namespaces, cgroup controllers and free space in the
    home, and returns the report::

        {"checks": [{"name", "status": "ok"|"warn"|"fail", "detail", "fix",
                     "needed_by": ["vm"|"sandbox"]}, ...],
         "isolation": "vm", "ready": True, "runs": ["vm", "sandbox"]}

    ``ready`` says whether boxes of the default isolation can run here. It
    blocks for up to a few seconds: from asyncio, call it with
    ``await asyncio.to_thread(libbox.doctor)``.
    """
    if home is not None and (not isinstance(home, (str, os.PathLike)) or not os.fspath(home)):
        raise TypeError("home must be a non-empty path")
    opts = json.dumps({"home": os.fspath(home)} if home is not None else {}).encode()
    return json.loads(_ffi.take_string(_ffi.lib.box_doctor, opts))
