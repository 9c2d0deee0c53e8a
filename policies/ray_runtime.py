"""Starting or joining Ray, for every driver: the one place that calls ``ray.init``.

``start_ray`` joins the cluster at an address, checked first (``check_address`` fails within
seconds where ``ray.init`` would retry for minutes), or starts a local Ray without a dashboard
unless this process already runs one; ``ensure_ray`` is the local start of the PPO drivers.

In a script (``experiments.cli.run_cli``) a stop signal (SIGTERM, Ctrl-C) that arrives while
``ray.init`` runs waits for it (a half-started node leaves its agents running), the stop
handlers are put back after it (Ray's core worker replaces SIGTERM's with one that prints a
native stack dump and aborts), and a stop shuts down the Ray this call started or joined
(``rlpkd.stop_signals``).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from typing import Any

import ray

from rlpkd.errors import ResourceError
from rlpkd.stop_signals import (
    on_stop,
    reinstall_stop_handlers,
    stop_handlers_installed,
    stops_deferred,
)

__all__ = ["ADDRESS_TIMEOUT_S", "RAY_CLIENT_PORT", "check_address", "start_ray", "ensure_ray"]

ADDRESS_TIMEOUT_S = 3.0
"""How long the reachability check of ``--address`` waits for a TCP connection."""
RAY_CLIENT_PORT = 10001
"""Ray Client's default port (a ``ray://HOST`` address without one)."""


def _no_cluster(address: str, why: str) -> ResourceError:
    return ResourceError(
        f"--address {address}: {why}; start one with 'ray start --head', check the address, "
        "or leave --address out for a local Ray"
    )


def _resolve_auto(address: str) -> str:
    """The host:port (or ray:// address) that Ray would join for 'auto': RAY_ADDRESS if set,
    else the cluster ``ray start`` recorded on this machine, else a running local GCS."""
    from_env = os.environ.get("RAY_ADDRESS", "")
    if from_env and from_env != "auto":
        return from_env
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:  # Ray's private layout changed: let ray.init decide
        return ""
    try:
        resolved = canonicalize_bootstrap_address("auto")
    except (ConnectionError, ValueError) as error:
        raise _no_cluster(address, f"no running Ray cluster on this machine ({error})") from None
    if not resolved:
        raise _no_cluster(address, "no running Ray cluster on this machine")
    return resolved


def check_address(address: str, timeout_s: float = ADDRESS_TIMEOUT_S) -> None:
    """Fail within ``timeout_s`` when nothing listens at a Ray ``address`` ('auto',
    'HOST:PORT' or 'ray://HOST[:PORT]'); ``ray.init`` itself would retry for minutes.

    Raises:
        ResourceError: one line naming the address.
    """
    target = _resolve_auto(address) if address == "auto" else address
    if not target:
        return
    host_port = target.removeprefix("ray://")
    host, _, port_text = host_port.rpartition(":")
    if not host:
        host, port_text = host_port, str(RAY_CLIENT_PORT) if target.startswith("ray://") else ""
    try:
        port = int(port_text)
    except ValueError:
        raise _no_cluster(address, f"'{target}' is not HOST:PORT or ray://HOST:PORT") from None
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=timeout_s):
            pass
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise _no_cluster(address, f"nothing answers at {host}:{port} ({reason})") from None


def start_ray(address: str | None = None, **init_options: Any) -> bool:
    """Join the cluster at ``address`` or start a local Ray; True when this call connected.

    With an ``address`` ('auto', 'HOST:PORT' or 'ray://HOST[:PORT]'), ``check_address`` runs
    first and ``ray.init(address=address, **init_options)`` joins it. Without one, a Ray this
    process already runs is kept (False); otherwise ``ray.init(include_dashboard=False,
    **init_options)`` starts a local one. ``init_options`` go to ``ray.init`` as given.

    Raises:
        ResourceError: one line naming the address when nothing answers there.
    """
    if address:
        check_address(address)
        try:
            _init_ray(address=address, **init_options)
        except ConnectionError as error:
            raise _no_cluster(address, f"no Ray cluster to join ({error})") from None
        return True
    if ray.is_initialized():
        return False
    _init_ray(include_dashboard=False, **init_options)
    return True


def _init_ray(**init_options: Any) -> None:
    """``ray.init``; under a script's stop handlers (``rlpkd.stop_signals``) a stop signal waits
    until it returns, the handlers it replaced are put back and a stop shuts this Ray down."""
    if not stop_handlers_installed():
        ray.init(**init_options)
        return
    with stops_deferred(), _stop_handler_kept_by_ray_init():
        try:
            ray.init(**init_options)
        finally:
            reinstall_stop_handlers()  # Ray's core worker installs its own on SIGTERM
        on_stop(ray.shutdown)


@contextlib.contextmanager
def _stop_handler_kept_by_ray_init() -> Iterator[None]:
    """``ray.init`` begins by putting its own handler (``sys.exit``) on SIGTERM: one that
    arrives while the node starts would cut it short and leave its agents running. Inside, Ray
    keeps the handler it finds (ours, which holds the stop until ``ray.init`` returns)."""
    utils = ray._private.utils  # Ray is pinned; tests/scripts/test_stop_signals.py checks this
    own_handler = utils.set_sigterm_handler
    utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        utils.set_sigterm_handler = own_handler


def ensure_ray(num_cpus: int | None = None) -> None:
    """Start a local Ray (no dashboard) unless one is already running."""
    start_ray(num_cpus=num_cpus, log_to_driver=False)
