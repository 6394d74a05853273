"""The protocol every runtime backend implements, and the registry lookup.

A backend turns one graph artifact of a bundle into a callable ``GraphRunner``. It knows no task:
it sees names, arrays and files. Vendor runtimes are imported inside ``load_graph`` only.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Mapping

import numpy as np

from edgeaudio import registry
from edgeaudio.errors import UsageError


class GraphRunner:
    """One loaded graph: ``run(feeds) -> outputs`` with arrays keyed by the manifest's names."""

    input_names: list[str]
    output_names: list[str]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def bare_call(self) -> Callable[[dict], Any] | None:
        """The vendor runtime's own call on this loaded graph (the same session or compiled
        model), with nothing of edgeaudio in between (``feeds -> outputs``): what ``edgeaudio
        bench`` times the runtime against. None when there is no plainer call than ``run``."""
        return None

    def bind(self, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> Callable[[], None] | None:
        """A call that runs the graph reading ``inputs`` and writing ``outputs`` where they lie:
        every graph input and output bound once to a C-contiguous array of its type and of the
        shape each call takes or makes, so a call converts and allocates nothing. What a stream
        runs block after block (``edgeaudio.bound_block.BoundBlock``). None where the backend has no
        such call; the runtime then calls ``run``."""
        return None


class Backend:
    """Subclasses set ``name`` and ``artifact`` (the artifact backend name in the manifest they read).

    ``options`` come from the caller and the host profile: ``threads`` (int), ``device`` (str), and
    for a backend that runs framework modules rather than graph files (torch, the reference)
    ``modules``: a callable ``(graph_name, weights_path) -> module`` the runtime supplies. A
    backend ignores options it does not use.
    """

    name: ClassVar[str] = ""
    artifact: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self, options: Mapping[str, Any] | None = None):
        self.options = dict(options or {})

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """Whether this backend can run here, and why (or why not) in one line."""
        raise NotImplementedError

    def load_graph(self, bundle, graph: Mapping[str, Any], artifact: Mapping[str, Any]) -> GraphRunner:
        """Load ``artifact`` (one entry of ``graph['artifacts']``) from ``bundle``."""
        raise NotImplementedError


def backends() -> dict[str, type[Backend]]:
    """Registered backend classes by name (a registration of anything else is the plugin's reported failure)."""
    return {cls.name: cls for cls in registry.collect("register_backends", registry.subclass_check(Backend))}


def get_backend(name: str) -> type[Backend]:
    found = backends()
    if name not in found:
        known = ", ".join(sorted(found)) or "none (are plugins disabled by EDGEAUDIO_LOAD_PLUGINS?)"
        raise UsageError(f"unknown backend '{name}'; known: {known}", hint="see `edgeaudio doctor`")
    return found[name]


def check_feeds(runner: GraphRunner, feeds: Mapping[str, np.ndarray]) -> None:
    missing = [name for name in runner.input_names if name not in feeds]
    if missing:
        raise UsageError(f"graph inputs missing: {missing}")
