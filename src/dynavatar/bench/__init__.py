"""Benchmarks (DESIGN.md §5): CUDA-event timings after warm-up, printed as one table."""


def sync_cuda() -> None:
    """Wait for queued GPU work so wall-clock stage times are true (no-op without CUDA)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def warm_up_cuda(device) -> float:
    """Build/load the CUDA extensions (gsplat's rasteriser, the binding kernel) before anything is
    timed; returns the seconds it took. The first run on a machine compiles them (tens of seconds,
    cached in ~/.cache/torch_extensions); benchmarks report it as its own row, not as training."""
    import time

    import torch

    if torch.device(device).type != "cuda":
        return 0.0
    from ..gaussians.avatar import GaussianAvatar
    from ..gaussians.binding import bind
    from ..geometry.cameras import Cameras
    from ..render.gsplat_renderer import GsplatRenderer

    t = time.perf_counter()
    verts = torch.tensor([[[0.0, 0.0, -1.0], [0.1, 0.0, -1.0], [0.0, 0.1, -1.0]]], device=device)
    faces = torch.tensor([[0, 1, 2]], device=device)
    avatar = GaussianAvatar.init_on_mesh(1, 1, device=device)
    K = torch.tensor([[[16.0, 0, 8], [0, 16.0, 8], [0, 0, 1]]], device=device)
    cam = Cameras(torch.diag(torch.tensor([1.0, -1, -1, 1], device=device))[None], K, 16, 16)
    GsplatRenderer().render(bind(avatar, verts, faces), cam)
    sync_cuda()
    return time.perf_counter() - t
