"""Running calibration data through a model: batches or a callable, a sample limit, hooks on chosen layers.

`CalibrationData` is what users pass to `qcore.quantize`: an iterable of
batches (each run as ``model(batch)``, or ``model(**batch)`` for a mapping)
or a callable ``fn(model)`` that runs the model itself (e.g.
``lambda m: m.encode(sentences)``). `CalibrationSource` runs it once for
the statistics and again when the pipeline needs another look (a probe of
the dataflow, a second pass for observers after a transform): an iterable is
iterated only once, and the batches it gave are replayed.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import attrs
import torch
from torch import nn

from qcore.errors import QcoreError

CalibrationData = Iterable[Any] | Callable[[nn.Module], Any]
LayerHook = Callable[[torch.Tensor, int], None]
"""Called with a layer's input rows (padding removed, see `_hooked`) and the row count the layer ran at."""
PROBE_ROWS = 4
"""Rows of the first batch that a probe runs."""


@attrs.frozen
class CalibrationInfo:
    """How much data calibrated the model, and what it fed (observers, algorithms' statistics)."""

    samples: int
    batches: int
    observer: str


class _Enough(Exception):
    """Raised inside a hook to stop a calibration callable once enough samples ran."""


def _rows(batch: Any) -> int:
    """Leading dimension of the first tensor in a batch (1 when there is none)."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.ndim else 1
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else ()
    for value in values:
        if isinstance(value, torch.Tensor) or isinstance(value, (Mapping, list, tuple)):
            return _rows(value)
    return 1


def _head(batch: Any, n: int, rows: int) -> Any:
    """The first `n` samples of a batch: tensors whose leading dimension is the batch's are cut."""
    if isinstance(batch, torch.Tensor):
        return batch[:n] if batch.ndim and batch.shape[0] == rows else batch
    if isinstance(batch, Mapping):
        return {k: _head(v, n, rows) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and any(isinstance(v, (torch.Tensor, Mapping, list, tuple)) for v in batch):
        return type(batch)(_head(v, n, rows) for v in batch)
    return batch


def _call(model: nn.Module, batch: Any) -> Any:
    return model(**batch) if isinstance(batch, Mapping) else model(batch)


def _attention_mask(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> torch.Tensor | None:
    """A 2-D (batch, tokens) ``attention_mask`` among a call's arguments (a keyword, or a key of a mapping)."""
    for holder in (kwargs, *(a for a in args if isinstance(a, Mapping))):
        mask = holder.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.ndim == 2 and not mask.is_floating_point():
            return mask
    return None


def _real_rows(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The rows of `x` (batch, tokens, K) at the mask's real tokens; all of `x` when shapes do not line up."""
    if mask is None or x.ndim != 3 or tuple(x.shape[:2]) != tuple(mask.shape):
        return x
    return x[mask.to(device=x.device, dtype=torch.bool)]


@contextlib.contextmanager
def _hooked(model: nn.Module, hooks: Mapping[nn.Module, LayerHook], first: Callable[[torch.Tensor], None]
            ) -> Iterator[None]:
    """Forward pre-hooks calling each module's function with its input rows; `first` sees the first module's.

    Padding is not data: when the model is called with a 2-D integer
    ``attention_mask`` (Hugging Face models, sentence-transformers), the
    functions see only the rows of real tokens (a (batch, tokens, K) input
    becomes (real tokens, K)); half of a padded batch of short sentences can
    be padding, and its activations would skew every statistic.
    """
    order: list[nn.Module] = []
    mask: list[torch.Tensor | None] = [None]

    def remember_mask(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        found = _attention_mask(args, kwargs)
        if found is not None:
            mask[0] = found

    def make(module: nn.Module, fn: LayerHook) -> Callable[..., None]:
        def pre_hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
            if not order:
                order.append(module)
            if module is order[0]:
                first(args[0])
            x = args[0]
            fn(_real_rows(x, mask[0]), max(1, x.numel() // max(1, x.shape[-1])))

        return pre_hook

    handles = [m.register_forward_pre_hook(remember_mask, with_kwargs=True) for m in model.modules()]
    handles += [module.register_forward_pre_hook(make(module, fn)) for module, fn in hooks.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


class CalibrationSource:
    """Calibration data, run up to `limit` samples; the batches of an iterable are kept for replays."""

    def __init__(self, data: CalibrationData, limit: int) -> None:
        self.data = data
        self.limit = limit
        self._batches: list[Any] | None = None
        self._first_call: tuple[nn.Module, tuple[Any, ...], dict[str, Any]] | None = None

    @property
    def is_callable(self) -> bool:
        return callable(self.data)

    def run(self, model: nn.Module, hooks: Mapping[nn.Module, LayerHook], *, first_batch_only: bool = False,
            advance: Callable[[int], None] = lambda rows: None) -> tuple[int, int]:
        """Run the data with `hooks` (module → fn(input)); returns (samples, batches) run.

        A callable's passes are counted where the first hooked module runs,
        and it is stopped once `limit` samples (one pass with
        `first_batch_only`) have run.
        """
        limit = 1 if first_batch_only else self.limit
        counted = [0, 0]

        def on_pass(x: torch.Tensor) -> None:
            if not self.is_callable:
                return
            if counted[0] >= limit:
                raise _Enough
            rows = x.shape[0] if x.ndim > 1 else 1
            counted[0] += rows
            counted[1] += 1
            advance(rows)

        with _evaluating(model), _hooked(model, hooks, on_pass), self._first_call_recorded(model):
            if self.is_callable:
                with contextlib.suppress(_Enough):
                    self.data(model)  # type: ignore[operator]
                return counted[0], counted[1]
            return self._feed(model, sys.maxsize if first_batch_only else limit, first_batch_only, advance)

    def _feed(self, model: nn.Module, limit: int, one: bool, advance: Callable[[int], None]) -> tuple[int, int]:
        if self._batches is not None:
            batches: Iterable[Any] = self._batches[:1] if one else self._batches
            replay = True
        else:
            batches = itertools.islice(self.data, 1) if one else self.data  # type: ignore[arg-type]
            replay = False
            kept: list[Any] = []
        samples = count = 0
        for batch in batches:
            rows = _rows(batch)
            if rows > limit - samples:
                batch, rows = _head(batch, limit - samples, rows), limit - samples
            if not replay:
                kept.append(batch)
            _call(model, batch)
            samples += rows
            count += 1
            advance(rows)
            if samples >= limit:
                break
        if not replay:
            self._batches = kept
        return samples, count

    @contextlib.contextmanager
    def _first_call_recorded(self, model: nn.Module) -> Iterator[None]:
        """Remember the first module call the data makes (the outermost one): what a probe replays."""
        if self._first_call is not None:
            yield
            return

        def record(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if self._first_call is None:
                self._first_call = (module, args, kwargs)

        handles = [m.register_forward_pre_hook(record, with_kwargs=True) for m in model.modules()]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def probe(self, model: nn.Module, hooks: Callable[[], contextlib.AbstractContextManager[None]]
              ) -> list[torch.Tensor]:
        """Replay the data's first module call on a few rows, inside `hooks`; returns what it computed.

        The result is every Linear's input, in call order, and the output of
        the last module to run: what a change upstream would show in.
        """
        if self._first_call is None:
            raise QcoreError("a probe needs the calibration pass to have run a batch first")
        module, args, kwargs = self._first_call
        rows = _rows([*args, *kwargs.values()])
        seen: list[torch.Tensor] = []
        last: list[torch.Tensor] = []
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        first: list[nn.Module] = []

        def record_input(module: nn.Module, args: tuple[Any, ...]) -> None:
            if not first:
                first.append(module)
            elif module is first[0]:
                raise _Enough
            seen.append(args[0].detach())

        def record_output(_module: nn.Module, _args: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                last[:] = [output.detach()]

        with _evaluating(model), hooks():
            handles = [m.register_forward_pre_hook(record_input) for m in linears]
            handles += [m.register_forward_hook(record_output) for m in model.modules()]
            try:
                with contextlib.suppress(_Enough):
                    module(*_head(args, PROBE_ROWS, rows), **_head(kwargs, PROBE_ROWS, rows))
            finally:
                for handle in handles:
                    handle.remove()
        return seen + last


def progress_bar(enabled: bool):  # type: ignore[no-untyped-def]
    """A rich progress display on stderr (transient, and silent when disabled or not a terminal)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True, disable=not (enabled and console.is_terminal))
