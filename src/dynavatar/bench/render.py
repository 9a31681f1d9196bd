"""``dynavatar bench render``: animated-frame time of the whole path vs raw gsplat.

End to end = FLAME forward (B frames of expression/jaw/pose) + ``bind`` + ``GsplatRenderer``;
raw = ``gsplat.rasterization()`` alone on the same world-space splats, same cameras and
options. Both are timed with CUDA events after warm-up, no I/O, no gradients (an animation
frame). ``ratio`` = raw time / end-to-end time, i.e. the share of raw gsplat throughput that the
full path keeps (goal: >= 0.8 at 100k splats).

The FLAME call is one line (``_flame_vertices``); without the embedded default head (assets not
built yet) a stand-in linear blendshape model of FLAME's size (5023 vertices, 9976 faces-ish
sphere, 150 components) is used and the row says so.
"""

from __future__ import annotations

import math

import torch

__all__ = ["run_render_bench", "format_table"]


class _StandInHead:
    """FLAME-sized linear blendshape sphere, for when no head model file is available."""

    def __init__(self, device, n_comp: int = 150):
        rings, segs = 70, 72  # ~5k vertices, ~10k faces
        th = torch.linspace(0.05, math.pi - 0.05, rings)
        ph = torch.linspace(0, 2 * math.pi, segs + 1)[:-1]
        t, p = torch.meshgrid(th, ph, indexing="ij")
        v = 0.1 * torch.stack([t.sin() * p.cos(), t.cos(), t.sin() * p.sin()], -1).reshape(-1, 3)
        i = torch.arange(rings - 1)[:, None] * segs
        j = torch.arange(segs)[None]
        a, b = i + j, i + (j + 1) % segs
        c, d = a + segs, b + segs
        faces = torch.cat([torch.stack([a, c, b], -1), torch.stack([b, c, d], -1)]).reshape(-1, 3)
        g = torch.Generator().manual_seed(0)
        self.template = v.to(device)
        self.dirs = (1e-3 * torch.randn(v.numel(), n_comp, generator=g)).to(device)
        self.faces = faces.to(device)
        self.n_comp = n_comp

    def vertices(self, coeffs):  # [B, n_comp] -> [B, V, 3]
        return self.template + (coeffs @ self.dirs.T).reshape(coeffs.shape[0], -1, 3)


def _load_head(device):
    try:
        from ..flame import FlameModel

        model = FlameModel.load().to(device)
        return "flame", model, model.faces.long()
    except Exception:  # the default head asset may not be built in this checkout
        head = _StandInHead(device)
        return "stand-in", head, head.faces


def _flame_vertices(kind, model, B, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    if kind == "flame":
        from ..flame import FlameParams

        p = FlameParams.zeros(B, model.n_shape, model.n_expr, device=device)
        p.expr = 0.5 * torch.randn(B, model.n_expr, generator=g).to(device)
        p.jaw = torch.tensor([0.1, 0.0, 0.0], device=device).expand(B, 3).clone()
        fn = lambda: model(p, landmark_set=None, check_finite=False).vertices  # noqa: E731 - the one FLAME line
        fn.params = p
        return fn
    coeffs = torch.randn(B, model.n_comp, generator=g).to(device)
    return lambda: model.vertices(coeffs)


def _time_ms(fn, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


@torch.no_grad()
def run_render_bench(
    splat_counts=(10_000, 50_000, 100_000, 300_000),
    batches=(1, 16),
    resolution: int = 512,
    warmup: int = 10,
    iters: int = 50,
    device: str = "cuda",
    bind_backend: str = "auto",
) -> list[dict]:
    """One row per (splats, batch): end-to-end and raw-gsplat frame times, and their ratio."""
    if not torch.cuda.is_available():
        raise RuntimeError("the render benchmark needs a CUDA device")
    from ..gaussians.avatar import GaussianAvatar
    from ..gaussians.binding import bind
    from ..geometry.cameras import Cameras
    from ..render.gsplat_renderer import GsplatRenderer, import_gsplat

    gsplat = import_gsplat()
    kind, model, faces = _load_head(device)
    n_faces = faces.shape[0]
    renderer = GsplatRenderer(render_depth=False)
    rows = []
    for n in splat_counts:
        per = math.ceil(n / n_faces)
        g = torch.Generator().manual_seed(1)
        av = GaussianAvatar.init_on_mesh(n_faces, per, jitter=0.3, init_opacity=0.6, generator=g)
        keep = torch.randperm(av.num_splats, generator=g)[:n]
        av = av.replace(**{k: getattr(av, k)[keep] for k in
                           ("means_local", "quats_local", "log_scales_local", "opacity_logits", "sh",
                            "binding", "labels")})
        av = av.replace(sh=av.sh + 0.3 * torch.randn(av.sh.shape, generator=g)).to(device)
        for B in batches:
            cams = Cameras.orbit(B, radius=0.6, azimuth_range_deg=(-60, 60), width=resolution,
                                 height=resolution, fov_y_deg=25.0, device=device)
            verts_fn = _flame_vertices(kind, model, B, device)

            if kind == "flame":  # FLAME + bind captured in one CUDA graph, rasterisation eager
                from ..render.animate import GraphedPoser

                poser = GraphedPoser(model, av, batch=B)
                params = verts_fn.params

                def end_to_end():
                    return renderer.render(poser(params), cams)
            else:
                def end_to_end():
                    return renderer.render(bind(av, verts_fn(), faces, backend=bind_backend), cams)

            wg = bind(av, verts_fn(), faces, backend=bind_backend)
            opac = wg.opacities.expand(B, n) if B > 1 else wg.opacities
            colors = wg.colors.expand(B, *wg.colors.shape) if B > 1 else wg.colors
            if B == 1:
                args = (wg.means[0], wg.quats[0], wg.scales[0], opac, colors, cams.viewmats, cams.Ks)
            else:
                args = (wg.means, wg.quats, wg.scales, opac, colors, cams.viewmats[:, None], cams.Ks[:, None])

            def raw():
                return gsplat.rasterization(*args, resolution, resolution, sh_degree=wg.sh_degree,
                                            packed=False)

            t_e2e = _time_ms(end_to_end, warmup, iters)
            t_raw = _time_ms(raw, warmup, iters)
            t_flame = _time_ms(verts_fn, warmup, iters)
            t_bind = _time_ms(lambda: bind(av, verts_fn(), faces, backend=bind_backend), warmup, iters) - t_flame
            rows.append(dict(splats=n, batch=B, resolution=resolution, head=kind,
                             e2e_ms=t_e2e, raw_ms=t_raw, flame_ms=t_flame, bind_ms=t_bind,
                             e2e_fps=1000 * B / t_e2e, raw_fps=1000 * B / t_raw, ratio=t_raw / t_e2e))
    return rows


def format_table(rows: list[dict]) -> str:
    """Plain-text table of ``run_render_bench`` rows."""
    cols = [("splats", "{:>8}"), ("batch", "{:>5}"), ("head", "{:>8}"), ("flame_ms", "{:>8.3f}"),
            ("bind_ms", "{:>8.3f}"), ("e2e_ms", "{:>8.3f}"), ("raw_ms", "{:>8.3f}"),
            ("e2e_fps", "{:>9.0f}"), ("raw_fps", "{:>9.0f}"), ("ratio", "{:>6.2f}")]
    head = " ".join(f"{c:>{len(f.format(rows[0][c])) if rows else 8}}" for c, f in cols)
    lines = [head]
    for r in rows:
        lines.append(" ".join(f.format(r[c]) for c, f in cols))
    return "\n".join(lines)
