"""``scenepriv serve``: a web page on this computer to protect photos, check them and download them.

:func:`create_app` builds the FastAPI application (tests pass it a classifier); :func:`run` serves it with uvicorn
on 127.0.0.1 unless told otherwise. Photos are protected through :func:`scenepriv.pipeline.protect_files`, as
on the command line. FastAPI, uvicorn and python-multipart come with the ``serve`` extra: this module imports
none of them until the page is built, and :func:`require_extra` says in one line what to install.

The rooms: :mod:`.app` the routes, :mod:`.jobs` the job store and its expiry, :mod:`.uploads` the upload checks,
:mod:`.worker` the protection and checks, :mod:`.wording` what the page says of a result.
"""

from __future__ import annotations

import asyncio
import errno
import importlib
import ipaddress
import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..settings import DEFAULT_STRENGTH, ScenePrivError

if TYPE_CHECKING:
    from .app import create_app
    from .worker import ModelSource

__all__ = ["create_app", "is_loopback", "other_model_names", "require_extra", "run"]

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# Models the page also checks photos on, where their weights are installed (offline packages: the models extra).
CHECKED_MODELS = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")


# What the page needs beyond scenepriv itself (the serve extra): the module each package is imported as.
EXTRA_MODULES = {"fastapi": ("fastapi",), "uvicorn": ("uvicorn",),
                 "python-multipart": ("python_multipart", "multipart")}


def require_extra() -> None:
    """ScenePrivError, in one line naming the extra to install, where FastAPI, uvicorn or python-multipart is
    missing."""
    missing = []
    for package, modules in EXTRA_MODULES.items():
        for module in modules:
            try:
                importlib.import_module(module)
                break
            except ImportError:
                continue
        else:
            missing.append(package)
    if missing:
        raise ScenePrivError(f"scenepriv serve needs {', '.join(missing)}, which this installation lacks: "
                             "pip install 'scenepriv[serve]'")


def __getattr__(name: str) -> Any:
    """``create_app``, imported from :mod:`.app` (and FastAPI with it) when first asked for."""
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def other_model_names(protected_against: Sequence[str]) -> list[str]:
    """The models of :data:`CHECKED_MODELS` not protected against whose weights this installation has."""
    from ..zoo import MODELS

    return [name for name in CHECKED_MODELS if name not in protected_against and MODELS[name].weights_status()[1]]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is an address only this computer reaches (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bound_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port``; OSError (the port in use, an address not of this computer) said
    in one line by the caller."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    infos = socket.getaddrinfo(host.strip("[]"), port, family, socket.SOCK_STREAM)
    server = socket.socket(infos[0][0], socket.SOCK_STREAM)
    try:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(infos[0][4])
        server.listen(128)
    except OSError:
        server.close()
        raise
    return server


def _quiet_stop(record: logging.LogRecord) -> bool:
    """Ctrl+C cancels the page's lifespan while uvicorn stops (Starlette reports it as a traceback ending in
    CancelledError): the way this server ends, not an error to print."""
    if record.exc_info and record.exc_info[0] is not None:
        return not issubclass(record.exc_info[0], (asyncio.CancelledError, KeyboardInterrupt))
    return not str(record.msg).rstrip().endswith("CancelledError")


def run(models: ModelSource, *, other_models: Mapping[str, Callable[[], Any]] | None = None,
        host: str = "127.0.0.1", port: int = 8765, strength: str = DEFAULT_STRENGTH, max_upload_mb: float = 50,
        say: Callable[[str], None] = print, warn: Callable[[str], None] = print) -> int:
    """Serve the page until interrupted (Ctrl+C). A host that is not a loopback address is ``warn``-ed about:
    anyone who reaches it can use the page; the server's own problems (a model left out of the checks, a bug)
    are ``warn``-ed too."""
    require_extra()
    import uvicorn

    from .app import create_app

    loopback = is_loopback(host)
    if not loopback:
        warn(f"--host {host} is not a loopback address: anyone on the networks it reaches can upload photos to "
             "this page and download the results; use it only on a network you trust")
    try:
        listening = bound_socket(host, port)
    except OSError as error:
        raise ScenePrivError(f"cannot listen on {host} port {port}: {error.strerror or error}"
                             + ("; choose another --port" if error.errno == errno.EADDRINUSE else "")) from None
    app = create_app(models, other_models=other_models, strength=strength, max_upload_mb=max_upload_mb,
                     allowed_hosts=[*LOOPBACK_NAMES, host] if loopback else None, warn=warn)
    shown_host = f"[{host}]" if ":" in host else host
    say(f"scenepriv serve: open http://{shown_host}:{listening.getsockname()[1]}/ in a browser "
        "(photos stay on this computer; Ctrl+C stops the server and deletes them)")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    logging.getLogger("uvicorn.error").addFilter(_quiet_stop)
    try:
        server.run(sockets=[listening])
    except KeyboardInterrupt:  # uvicorn stops on Ctrl+C, then raises it again: the way this server is meant to stop
        pass
    finally:
        listening.close()
    say("scenepriv serve: stopped; the photos it held are deleted")
    return 0
