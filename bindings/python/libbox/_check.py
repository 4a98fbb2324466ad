"""Argument checks shared by the public classes.

Wrong types raise TypeError and bad values ValueError here, before anything
reaches the library; this module must never call into the library.
"""

from __future__ import annotations

import inspect
import math
import os
from typing import Any, Mapping, Optional


def text(v: Any, what: str, *, empty: bool = False) -> str:
    if not isinstance(v, str):
        raise TypeError(f"{what} must be str, not {type(v).__name__}")
    if not empty and not v:
        raise ValueError(f"{what} must not be empty")
    if "\x00" in v:
        raise ValueError(f"{what} contains a NUL character")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode (lone surrogate)") from None
    return v


def opt_text(v: Any, what: str) -> Optional[str]:
    return None if v is None else text(v, what)


def path(v: Any, what: str) -> str:
    if isinstance(v, os.PathLike):
        v = os.fspath(v)
    if isinstance(v, bytes):
        raise TypeError(f"{what} must be str or os.PathLike[str], not bytes")
    if not isinstance(v, str):
        raise TypeError(f"{what} must be str or os.PathLike, not {type(v).__name__}")
    return text(v, what)


def flag(v: Any, what: str) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"{what} must be bool, not {type(v).__name__}")
    return v


def positive_int(v: Any, what: str) -> Optional[int]:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{what} must be int, not {type(v).__name__}")
    if v <= 0 or v > 2**31 - 1:
        raise ValueError(f"{what} must be a positive int, got {v}")
    return v


def env(v: Any, what: str = "env") -> Optional[dict[str, str]]:
    if v is None:
        return None
    if not isinstance(v, Mapping):
        raise TypeError(f"{what} must be a mapping of str to str, not {type(v).__name__}")
    out: dict[str, str] = {}
    for k, val in v.items():
        text(k, f"{what} key")
        if "=" in k:
            raise ValueError(f"{what} key {k!r} contains '='")
        out[k] = text(val, f"{what}[{k!r}]", empty=True)
    return out


def timeout(v: Any) -> Optional[float]:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, not {type(v).__name__}")
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {v}")
    return float(v)


def user(v: Any) -> Optional[str]:
    if v is None:
        return None
    if isinstance(v, bool):
        raise TypeError("user must be str or int, not bool")
    if isinstance(v, int):
        if v < 0:
            raise ValueError(f"user id must not be negative, got {v}")
        return str(v)
    return text(v, "user")


def data(v: Any, what: str) -> bytes:
    if isinstance(v, str):
        return v.encode("utf-8")
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    raise TypeError(f"{what} must be bytes or str, not {type(v).__name__}")


def volumes(v: Any) -> Optional[list[dict[str, Any]]]:
    if v is None:
        return None
    if isinstance(v, (str, bytes, Mapping)) or not hasattr(v, "__iter__"):
        raise TypeError("volumes must be a list of (host, box[, read_only]) tuples or dicts")
    out = []
    for item in v:
        if isinstance(item, Mapping):
            unknown = set(item) - {"host", "box", "read_only"}
            if unknown:
                raise ValueError(f"volume has unknown keys {sorted(unknown)}: use host, box, read_only")
            if "host" not in item or "box" not in item:
                raise ValueError("volume needs 'host' and 'box'")
            host, box, ro = item["host"], item["box"], item.get("read_only", False)
        elif isinstance(item, tuple) and len(item) in (2, 3):
            host, box = item[0], item[1]
            ro = item[2] if len(item) == 3 else False
        else:
            raise TypeError("each volume must be a (host, box[, read_only]) tuple or a dict")
        vol: dict[str, Any] = {"host": path(host, "volume host path"), "box": text(box, "volume box path")}
        if flag(ro, "volume read_only"):
            vol["read_only"] = True
        out.append(vol)
    return out


def signal_number(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"signal must be an int or signal.Signals, not {type(v).__name__}")
    if not 0 < int(v) < 65:
        raise ValueError(f"signal {int(v)} is out of range 1..64")
    return int(v)


def progress(v: Any) -> Any:
    """A pull progress callback: None or a plain (not async) callable."""
    if v is None:
        return None
    if not callable(v):
        raise TypeError(f"progress must be a callable taking a PullProgress, not {type(v).__name__}")
    if inspect.iscoroutinefunction(v) or inspect.iscoroutinefunction(getattr(v, "__call__", None)):
        raise TypeError("progress must be a plain callable, not an async function: it runs on the event loop "
                        "and is not awaited; hand events to a task with loop.create_task or a queue")
    return v


def _str_list(v: Any, what: str) -> Optional[list[str]]:
    if v is None:
        return None
    if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
        raise TypeError(f"{what} must be a list of str")
    return [text(x, what) for x in v]


def _port(item: Any) -> dict[str, Any]:
    if isinstance(item, Mapping):
        unknown = set(item) - {"host", "box", "protocol"}
        if unknown:
            raise ValueError(f"port has unknown keys {sorted(unknown)}: use host, box, protocol")
        host, box, proto = item.get("host", "0"), item.get("box"), item.get("protocol", "tcp")
    elif isinstance(item, tuple) and len(item) in (2, 3):
        host, box = item[0], item[1]
        proto = item[2] if len(item) == 3 else "tcp"
    else:
        raise TypeError("each port must be a (host, box[, protocol]) tuple or a dict")
    if isinstance(host, int) and not isinstance(host, bool):
        host = str(host)
    if isinstance(box, bool) or not isinstance(box, int):
        raise TypeError(f"box port must be int, not {type(box).__name__}")
    return {"host": text(host, "host port"), "box": box, "protocol": text(proto, "port protocol")}


def network(
    enabled: Any,
    allow: Any = None,
    deny: Any = None,
    ports: Any = None,
    hosts: Any = None,
    dns: Any = None,
) -> Any:
    """The create JSON "network" value: a bool, or an object when any
    setting is given (which needs network=True)."""
    on = flag(enabled, "network")
    obj: dict[str, Any] = {"enabled": on}
    if (a := _str_list(allow, "allow_net")) is not None:
        obj["allow"] = a
    if (d := _str_list(deny, "deny_net")) is not None:
        obj["deny"] = d
    if (s := _str_list(dns, "dns")) is not None:
        obj["dns"] = s
    if ports is not None:
        if isinstance(ports, (str, bytes, Mapping)) or not hasattr(ports, "__iter__"):
            raise TypeError("ports must be a list of (host, box[, protocol]) tuples or dicts")
        obj["ports"] = [_port(p) for p in ports]
    if hosts is not None:
        if not isinstance(hosts, Mapping):
            raise TypeError(f"hosts must be a dict of name to IP, not {type(hosts).__name__}")
        obj["hosts"] = {text(k, "host name"): text(v, "host IP") for k, v in hosts.items()}
    if len(obj) == 1:
        return on
    if not on:
        raise ValueError("allow_net, deny_net, ports, hosts or dns need network=True")
    return obj
