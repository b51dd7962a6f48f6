"""From images to Visual DNAs: ``VDNAProcessor.make_vdna`` and the streaming form.

The pipeline is: an image source (decoding/cropping/resizing in a thread pool) -> batches of
float32 pixels -> the extractor backend (LibTorch shim or eager PyTorch) -> per-layer activations
-> accumulation (the C core on the host; on the device for accelerators, read back once) -> VDNA.
Accumulation always goes through :class:`vdna.Accumulator`, so every path follows the same rules.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .accumulator import Accumulator
from .dna import VDNA, get_vdna
from .settings import DataSettings, ExtractionSettings

CROP_MODES = ("none", "center", "random")
RESIZE_MODES = ("clean", "fast")


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise ImportError(
            "processing images needs PyTorch: install the build for your machine first "
            "(https://pytorch.org), e.g. `pip install torch`, then use vdna again"
        ) from exc
    return torch


def resolve_device(device: Optional[str]) -> str:
    """``None`` -> "cuda" if available else "cpu"; otherwise the device string, validated."""
    torch = _torch()
    if device is None:
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"invalid device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available; use device='cpu'")
    return str(dev)


class VDNAProcessor:
    """Builds Visual DNAs from images. Extractors and backends are built once and reused."""

    def __init__(self):
        self._extractors = {}
        self._backends = {}

    # ------------------------------------------------------------------ building blocks
    def get_extractor(self, name: str, extractor_weights=None, allow_download=None):
        """The extractor ``name`` (with the checkpoint ``extractor_weights``), built once per processor
        and registration."""
        from .extractors import get_extractor, registration_generation

        key = (name, registration_generation(name), str(extractor_weights) if extractor_weights is not None else None)
        if key not in self._extractors:
            self._extractors[key] = get_extractor(name, extractor_weights=extractor_weights, allow_download=allow_download)
        return self._extractors[key]

    def get_backend(self, extractor, device: str, backend: str = "auto", amp_dtype=None, allow_tf32: bool = False):
        from .backends import get_backend

        key = (id(extractor), device, backend, str(amp_dtype), bool(allow_tf32))
        if key not in self._backends:
            self._backends[key] = get_backend(extractor, device=device, backend=backend, amp_dtype=amp_dtype,
                                              allow_tf32=allow_tf32)
        return self._backends[key]

    # ------------------------------------------------------------------ the one-call path
    def make_vdna(
        self,
        source,
        num_images: int = -1,
        shuffle_files: bool = False,
        feat_extractor_name: str = "mugs_vit_base",
        distribution_name: str = "histogram-1000",
        seed: int = 0,
        batch_size: int = 64,
        device: Optional[str] = None,
        verbose: bool = True,
        num_workers: int = 12,
        save_sample_images: Optional[Union[str, Path]] = None,
        n_sample_images: int = 5,
        crop_to_square_pre_resize: str = "none",
        *,
        resize_mode: str = "clean",
        backend: str = "auto",
        strict: bool = False,
        extractor_weights=None,
        activation_ranges=None,
        allow_download: Optional[bool] = None,
        amp_dtype=None,
        distributed: Optional[bool] = None,
        group=None,
        dst: Optional[int] = None,
        checkpoint: Optional[Union[str, Path]] = None,
        checkpoint_every: int = 1000,
        allow_tf32: bool = False,
    ) -> VDNA:
        """Make the Visual DNA of a set of images.

        Arguments of the reference package (vdna 0.1.1) keep their meaning; ``device=None`` picks CUDA
        when available, else the CPU. Extra keyword-only arguments:

        resize_mode: "clean" (the reference's, default) or "fast" (see :mod:`vdna.sources`).
        backend: "auto" (LibTorch shim when it can be built, else eager PyTorch), "libtorch", "eager".
        strict: raise on an unreadable image instead of skipping it with a warning.
        extractor_weights / activation_ranges / allow_download: where the extractor's assets come from
            (a checkpoint path, activation ranges, whether a missing file may be downloaded).
        amp_dtype: None (float32, default) or torch.float16 / torch.bfloat16: the forward pass under
            autocast with that dtype (both backends).
        allow_tf32: let GPU convolutions and matmuls use TF32 (default False: IEEE float32, so the DNA
            does not depend on the GPU generation). Both choices are recorded in ``dna.meta``.
        distributed / group / dst: under ``torch.distributed`` (e.g. ``torchrun``), each rank reads its
            share of the images and every rank (only rank ``dst`` if given; the others get None) returns
            the DNA of all of them; ``distributed=False`` turns this off (see :mod:`vdna.distributed`).
        checkpoint / checkpoint_every: save the state and progress to the file ``checkpoint`` every
            ``checkpoint_every`` images (atomically); rerunning with the same arguments resumes from it
            and gives the same DNA as an uninterrupted run (see :mod:`vdna.checkpoint`; one file per
            rank under torch.distributed). The file is kept at the end (a rerun returns at once).

        ``source`` may also be tar shards to stream (``"data/shard-{000000..012345}.tar"`` or a
        ``vdna.sources.TarShards``): shards are split across ranks and checkpointed whole, and memory
        does not grow with the number of images (see :mod:`vdna.sources.shards`).
        """
        from .distributed import context as dist_context
        from .sources import open_source

        _check_choice("crop_to_square_pre_resize", crop_to_square_pre_resize, CROP_MODES)
        _check_choice("resize_mode", resize_mode, RESIZE_MODES)
        _check_positive("batch_size", batch_size)
        if int(num_workers) < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        get_vdna(distribution_name)  # validates the name before any work
        ctx = dist_context(distributed, group)
        verbose = bool(verbose) and (ctx is None or ctx.rank == 0)  # progress from rank 0 only
        setup_error = identity = None
        try:  # under torch.distributed, a rank that fails here still joins the settings check below
            src = _tar_shard_stream(source, num_images, shuffle_files)
            if src is None:
                src = open_source(source, num_images=num_images, shuffle=shuffle_files, seed=seed)

            stream = self.stream(
                feat_extractor_name=feat_extractor_name,
                distribution_name=distribution_name,
                device=device,
                seed=seed,
                batch_size=batch_size,
                backend=backend,
                extractor_weights=extractor_weights,
                activation_ranges=activation_ranges,
                allow_download=allow_download,
                amp_dtype=amp_dtype,
                n_sample_images=n_sample_images if save_sample_images is not None else 0,
                allow_tf32=allow_tf32,
            )
            stream.data_settings = DataSettings(
                source=src.describe(),
                crop_to_square_pre_resize=crop_to_square_pre_resize,
                resize_mode=resize_mode,
                shuffle_files=shuffle_files,
                num_images=num_images,
            )
            stream.extraction_settings.num_workers = num_workers
            stream.extraction_settings.verbose = verbose
            stream.meta["resize_mode"] = resize_mode
            if ctx is None or ctx.rank == 0:  # found while listing, not read; every rank lists the same
                stream.meta["skipped_files"].extend({"name": n, "reason": r} for n, r in getattr(src, "skipped", ()))
            stream._dist, stream._dst = ctx, dst
            start, stop = (0, len(src)) if ctx is None else ctx.shard(len(src))
            identity = _run_identity(stream, src, num_images, shuffle_files, seed, crop_to_square_pre_resize, resize_mode,
                                     amp_dtype, ctx)
        except Exception as exc:
            if ctx is None:
                raise
            setup_error = exc
        if ctx is not None:  # every rank raises here (the same error) if any rank differs or failed
            from .distributed import check_same_settings

            check_same_settings(ctx, identity, "make_vdna", error=setup_error)
        from .distributed import ranks_agree

        with ranks_agree(ctx):  # under torch.distributed a failing rank stops every rank with an error
            checkpointer = None
            if checkpoint is not None:
                from .checkpoint import RunCheckpointer, rank_checkpoint_path

                path = rank_checkpoint_path(checkpoint, 0 if ctx is None else ctx.rank, 1 if ctx is None else ctx.world_size)
                checkpointer = RunCheckpointer(path, checkpoint_every, identity, start, stop)
                start = checkpointer.resume(stream.accumulator, stream.meta)
            stream._run_source(src, num_workers, crop_to_square_pre_resize, resize_mode, seed, strict, verbose,
                               start=start, stop=stop, checkpointer=checkpointer)
        vdna = stream.compute()
        if save_sample_images is not None and vdna is not None:
            stream.save_sample_images(save_sample_images)
        return vdna

    def stability(self, source, reference, **kwargs):
        """How the distance between random subsets of ``source`` and ``reference`` varies with the
        number of images: a :class:`vdna.stability.StabilityCurve` (paper Fig. 5).

        ``reference``: a DNA, a list or dict of DNAs (one per distribution), or a source (its DNAs are
        made with the same settings). Keywords: ``sizes=None`` (a geometric grid from 10 to all
        images), ``repeats=10``, ``seed=0``, ``distributions`` (default ("histogram-1000",
        "layer-gaussian"), or the reference DNAs' types), ``num_images``, ``feat_extractor_name``
        (default: the reference DNA's), ``batch_size``, ``device``, ``num_workers``,
        ``crop_to_square_pre_resize``, ``resize_mode``, ``backend``, ``extractor_weights``,
        ``activation_ranges``, ``allow_download``, ``max_memory`` (bytes, default 4 GiB; histogram
        state beyond it goes to a temporary file in ``temp_dir``), ``verbose``, and ``distributed`` /
        ``group`` / ``dst``: under ``torch.distributed``, each rank reads its share of the images (and
        of a reference source), the accumulation states are summed on rank ``dst`` (default 0), which
        computes the curve, and every rank gets it (only ``dst``, when given; the others get None).
        Each rank holds the full accumulation state (the tables are summed, not split).

        The network runs once per image; every subset's DNA is a sum of group accumulations (see
        :mod:`vdna.stability`). Unreadable images raise (a subset must hold the images it names).
        """
        from .stability import stability

        return stability(self, source, reference, **kwargs)

    def stream(
        self,
        feat_extractor_name: str = "mugs_vit_base",
        distribution_name: str = "histogram-1000",
        device: Optional[str] = None,
        seed: int = 0,
        batch_size: int = 64,
        backend: str = "auto",
        extractor_weights=None,
        activation_ranges=None,
        allow_download: Optional[bool] = None,
        amp_dtype=None,
        n_sample_images: int = 0,
        *,
        device_accumulation: Optional[bool] = None,
        distributed: Optional[bool] = None,
        group=None,
        dst: Optional[int] = None,
        allow_tf32: bool = False,
    ) -> "VDNAStream":
        """A streaming DNA builder: feed batches of images with ``update``, get the DNA with ``compute``.

        ``device_accumulation``: reduce activations on the extractor's device and read the states back
        once (default: on for accelerators, off for the CPU, where the C core accumulates directly).
        ``distributed`` / ``group`` / ``dst``: under ``torch.distributed``, each rank feeds its own
        images and ``compute()`` (a collective: every rank calls it) returns the DNA of all ranks'
        images (on rank ``dst`` only, if given); see :mod:`vdna.distributed`.
        ``allow_tf32``: as in ``make_vdna`` (default False: IEEE float32 on every GPU).
        """
        from .distributed import context as dist_context

        ctx = dist_context(distributed, group)
        dev = resolve_device(device)
        extractor = self.get_extractor(feat_extractor_name, extractor_weights=extractor_weights,
                                       allow_download=allow_download)
        be = self.get_backend(extractor, dev, backend, amp_dtype, allow_tf32)
        if device_accumulation is None:
            device_accumulation = not dev.startswith("cpu")
        stream = VDNAStream(extractor, be, distribution_name, dev, seed, batch_size, activation_ranges, n_sample_images,
                            device_accumulation=bool(device_accumulation))
        stream._dist, stream._dst = ctx, dst
        return stream


class VDNAStream:
    """Accumulates a DNA from batches of images given by the caller (e.g. a generator's samples).

    ``update(images)`` takes a batch as a NumPy array or torch tensor: (N, H, W, 3) uint8, or
    (N, 3, H, W) float, each image on [0, 1] (scaled by 255) or [0, 255] by the rule of
    ``vdna.sources.rgb`` (per image, validated); images of another size are resized with the "clean"
    resize (on the host). ``compute()`` returns the VDNA of everything so far (the names of
    ``vdna.Accumulator`` and of torchmetrics). Same guarantees as ``make_vdna``: counts do not depend
    on how the images are split into batches.

    Tensors already on the extractor's accelerator (a generator's samples) stay there: with device
    accumulation nothing waits for the device per batch; their validation is checked once, in
    ``compute()``, which raises ValueError if any image given was invalid (discard the stream then).
    """

    def __init__(self, extractor, backend, distribution_name, device, seed, batch_size, activation_ranges,
                 n_sample_images=0, device_accumulation=False):
        self.extractor = extractor
        self.backend = backend
        self.device = device
        self.batch_size = int(batch_size)
        self.accumulator = accumulator_for(extractor, distribution_name, activation_ranges)
        # On an accelerator the activations are reduced on the device and read back once at the
        # end; on the CPU the C core accumulates them directly (multi-threaded, no copies).
        self._device_acc = None
        if device_accumulation:
            self._device_acc = backend.device_accumulators(self.accumulator.device_specs())
        self.data_settings = DataSettings(source="stream", shuffle_files=False)
        self.extraction_settings = ExtractionSettings(device=str(device), batch_size=self.batch_size, seed=int(seed))
        self._pending_checks = []  # device bool tensors from scale_float_batch, checked in compute()
        self.meta = {
            "backend": backend.name,
            "amp_dtype": _dtype_name(getattr(backend, "amp_dtype", None)),
            "allow_tf32": bool(getattr(backend, "allow_tf32", False)),
            "weights_sha256": getattr(extractor, "weights_sha256", ""),
            "skipped_files": [],
        }
        self._n_samples = int(n_sample_images)
        self._samples = []
        self._dist = None  # a vdna.distributed.DistContext: compute() reduces over its ranks
        self._dst = None

    # -------------------------------------------------------------- feeding
    def update(self, images) -> None:
        """Accumulate one batch of images (see the class docstring for accepted forms)."""
        torch = _torch()
        batch = _as_pixel_batch(images, self.extractor.info.input_size, torch, self._pending_checks)
        for start in range(0, batch.shape[0], self.batch_size):
            self._forward(batch[start:start + self.batch_size])

    def _forward(self, batch) -> None:
        if self._n_samples > len(self._samples):
            take = self._n_samples - len(self._samples)
            self._samples.extend(batch[:take].detach().cpu().numpy().copy())
        if self._device_acc is not None:
            self._device_acc.update(batch)
        else:
            self.accumulator.update(self.backend.forward(batch))

    def _run_source(self, src, num_workers, crop, resize_mode, seed, strict, verbose, start=0, stop=None,
                    checkpointer=None):
        torch = _torch()
        allocate = None
        if self._device_acc is not None and torch.cuda.is_available():
            def allocate(shape):  # pinned host buffers: asynchronous copies to the device
                return torch.empty(shape, dtype=torch.float32, pin_memory=True).numpy()
        stop = len(src) if stop is None else stop
        for batch in source_batches(src, self.extractor.info, self.batch_size, num_workers, crop, resize_mode, seed,
                                    strict, verbose, allocate=allocate, start=start, stop=stop):
            if batch.skipped:
                self.meta["skipped_files"].extend([{"name": n, "reason": r} for n, r in batch.skipped])
            if len(batch.names):
                self._forward(torch.from_numpy(batch.images))
            if checkpointer is not None and batch.end is not None:
                checkpointer.after_batch(batch.end, self._flushed_state, self.meta)
        if checkpointer is not None and start < stop:
            checkpointer.after_batch(stop, self._flushed_state, self.meta, force=True)

    def _flush_device(self) -> None:
        """Merge what the device accumulated into the host accumulator and start the device afresh."""
        if self._device_acc is not None:
            self.accumulator.merge_device_states(self._device_acc.states())
            self._device_acc.close()
            self._device_acc = self.backend.device_accumulators(self.accumulator.device_specs())

    def _flushed_state(self) -> dict:
        self._flush_device()
        return self.accumulator.state_dict()

    # -------------------------------------------------------------- results
    def compute(self) -> Optional[VDNA]:
        """The DNA of everything added so far (of every rank's images under torch.distributed: then a
        collective, and None on ranks other than ``dst`` when it is given)."""
        if self._pending_checks:
            ok = bool(_torch().stack([c.cpu() for c in self._pending_checks]).all())  # the one wait
            if not ok:
                raise ValueError("images given to VDNAStream.update on the device contained NaN/Inf, negative "
                                 "values or values above 255 (expected floats on [0, 1] or [0, 255] per image); "
                                 "this stream's statistics include them: start a new stream")
            self._pending_checks = []
        self._flush_device()
        self.accumulator.data_settings = self.data_settings
        self.accumulator.extraction_settings = self.extraction_settings
        self.accumulator.meta.update(self.meta)
        acc = self.accumulator
        if self._dist is not None:
            from .distributed import reduce_accumulator

            acc = reduce_accumulator(acc, self._dist, self._dst)
            if acc is None:
                return None
        vdna = acc.compute()
        vdna.device = self.device
        skipped = vdna.meta.get("skipped_files", [])
        if skipped:
            warnings.warn(f"{len(skipped)} unreadable image(s) were skipped; "
                          "see vdna.meta['skipped_files']", stacklevel=2)
        return vdna

    def add(self, images) -> None:
        """Deprecated name of ``update``."""
        warnings.warn("VDNAStream.add is deprecated; use update", DeprecationWarning, stacklevel=2)
        self.update(images)

    def result(self) -> VDNA:
        """Deprecated name of ``compute``."""
        warnings.warn("VDNAStream.result is deprecated; use compute", DeprecationWarning, stacklevel=2)
        return self.compute()

    def save_sample_images(self, folder) -> list:
        """Save the first images (as given to the extractor, after crop/resize) as PNG files."""
        from PIL import Image

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, img in enumerate(self._samples):
            arr = np.clip(np.rint(np.transpose(img, (1, 2, 0))), 0, 255).astype(np.uint8)
            path = folder / f"{i}.png"
            Image.fromarray(arr).save(path)
            paths.append(path)
        return paths


def accumulator_for(extractor, distribution_name: str, activation_ranges=None) -> Accumulator:
    """An empty Accumulator for ``extractor``'s layers; histograms use ``activation_ranges`` or, by
    default, the extractor's own (shipped, cached or downloaded) ranges."""
    info = extractor.info
    if activation_ranges is None and distribution_name.startswith("histogram"):
        activation_ranges = extractor.activation_ranges()
    return Accumulator(distribution_name, dict(info.neurons_per_layer), activation_ranges=activation_ranges,
                       layouts=dict(info.layouts), feature_extractor_name=info.name)


def source_batches(src, info, batch_size, num_workers, crop, resize_mode, seed, strict, verbose, allocate=None,
                   desc=None, start=0, stop=None):
    """The batches of an ImageSource at ``info.input_size`` (see ``vdna.sources.iter_batches``), with a
    progress bar over images (read or skipped) when ``verbose``."""
    from . import heap

    with heap.pass_scope():  # freed activations stay in the heap for the next batch (vdna/heap.py)
        yield from _source_batches(src, info, batch_size, num_workers, crop, resize_mode, seed, strict, verbose,
                                   allocate, desc, start, stop)


def _source_batches(src, info, batch_size, num_workers, crop, resize_mode, seed, strict, verbose, allocate, desc,
                    start, stop):
    from .sources import iter_batches
    from .sources.shards import TarShards, iter_shard_batches

    stop = len(src) if stop is None else stop
    batch_kw = dict(num_workers=num_workers, crop_to_square=crop, resize_mode=resize_mode, seed=seed, strict=strict,
                    allocate=allocate, start=start, stop=stop)
    if isinstance(src, TarShards):
        batches = iter_shard_batches(src, info.input_size, batch_size, **batch_kw)
    else:
        batches = iter_batches(src, info.input_size, batch_size, **batch_kw)
    if not verbose:
        yield from batches
        return
    from tqdm.auto import tqdm

    if isinstance(src, TarShards):  # the number of images of a stream is not known in advance
        with tqdm(desc=desc or f"vdna {info.name} ({stop - start} shards)", unit="img") as progress:
            for batch in batches:
                yield batch
                progress.update(len(batch.names) + len(batch.skipped))
        return

    with tqdm(total=stop - start, desc=desc or f"vdna {info.name}", unit="img") as progress:
        for batch in batches:
            yield batch
            progress.update(len(batch.names) + len(batch.skipped))


def _tar_shard_stream(source, num_images, shuffle_files):
    """``source`` as a ``TarShards`` stream when it is one, a brace pattern of shards, or a list of
    ``.tar`` paths (a list is listed member by member instead, by ``open_source``, when ``num_images``
    or ``shuffle_files`` select images: those need the full listing); else None."""
    import os

    from .sources.shards import TarShards, has_braces

    if isinstance(source, (list, tuple)) and source and all(
            isinstance(p, (str, os.PathLike)) and os.fspath(p).endswith(".tar") for p in source):
        if num_images not in (-1, None) or shuffle_files:
            return None
        return TarShards(source)
    if not isinstance(source, TarShards):
        if not isinstance(source, (str, os.PathLike)) or os.path.exists(source) or not has_braces(source):
            return None
        source = TarShards(source)
    if num_images not in (-1, None) or shuffle_files:
        raise ValueError("tar shards are streamed whole and in order: num_images and shuffle_files are not supported "
                         "(select shards instead)")
    return source


def _run_identity(stream, src, num_images, shuffle_files, seed, crop, resize_mode, amp_dtype, ctx) -> dict:
    """What a resumed run (and every rank of a distributed one) must share with the original."""
    from .checkpoint import names_digest

    acc = stream.accumulator
    source = src.describe()
    return {
        "feature_extractor_name": acc.feature_extractor_name,
        "weights_sha256": str(stream.meta.get("weights_sha256", "")),
        "distribution_name": acc.distribution_name,
        "activation_ranges_sha256": acc.activation_ranges.checksum() if acc.activation_ranges is not None else "",
        "source": source if isinstance(source, str) else [str(s) for s in source],
        "source_images": len(src),
        "source_names_sha256": names_digest(getattr(src, "paths", None) or src.names),
        "num_images": int(num_images if num_images is not None else -1),
        "shuffle_files": bool(shuffle_files),
        "seed": int(seed),
        "crop_to_square_pre_resize": crop,
        "resize_mode": resize_mode,
        "amp_dtype": str(amp_dtype),
        "allow_tf32": bool(stream.meta.get("allow_tf32", False)),
        "world_size": 1 if ctx is None else ctx.world_size,
    }


def _dtype_name(dtype):
    return None if dtype is None else str(dtype).replace("torch.", "")


def _as_pixel_batch(images, size, torch, pending=None):
    """(N,3,H,W) float32 tensor on the 0..255 scale from the forms VDNAStream.update accepts.

    Float images are scaled per image by ``vdna.sources.rgb.scale_float_batch``. Tensors on an
    accelerator stay there; when ``pending`` (a list) is given their validation is appended to it
    as a device tensor instead of waiting for the device now.
    """
    from .sources.rgb import scale_float_batch

    if isinstance(images, (list, tuple)):
        images = np.stack([np.asarray(im) for im in images])
    t = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
    t = t.detach()
    if t.ndim != 4:
        raise ValueError(f"a batch of images must have 4 dimensions (N,H,W,3) or (N,3,H,W); got shape {tuple(t.shape)}")
    on_host = t.device.type == "cpu"
    if t.dtype == torch.uint8:
        if t.shape[-1] == 3 and t.shape[1] != 3:
            t = t.permute(0, 3, 1, 2)
        t = t.float()
    elif t.is_floating_point():
        if t.shape[1] != 3 and t.shape[-1] == 3:
            t = t.permute(0, 3, 1, 2)
        if t.shape[1] == 3:
            deferred = not on_host and pending is not None
            t, ok = scale_float_batch(t, deferred=deferred)
            if deferred:
                pending.append(ok)
    else:
        raise TypeError(f"images must be uint8 or floating point, got {t.dtype}")
    if t.shape[1] != 3:
        raise ValueError(f"images must have 3 (RGB) channels; got shape {tuple(t.shape)}")
    t = t.contiguous()
    h, w = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if tuple(t.shape[2:]) != (h, w):
        from .sources import resize_image

        host = t.cpu()
        out = np.empty((t.shape[0], 3, h, w), dtype=np.float32)
        for i in range(t.shape[0]):
            out[i] = resize_image(host[i].numpy().transpose(1, 2, 0), (h, w), "clean")
        t = torch.from_numpy(out)
    return t


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def _check_positive(name, value):
    if int(value) < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
