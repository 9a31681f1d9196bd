"""3DGS .ply export: header layout, round trip, atomic write."""


import numpy as np
import torch

from dynavatar.gaussians.avatar import GaussianAvatar
from dynavatar.gaussians.binding import bind
from dynavatar.io.ply import export_ply, read_ply


def _avatar_and_mesh(sh_degree):
    g = torch.Generator().manual_seed(0)
    verts = torch.randn(12, 3, generator=g)
    faces = torch.stack([torch.randperm(12, generator=g)[:3] for _ in range(10)])
    av = GaussianAvatar.init_on_mesh(10, 2, sh_degree=sh_degree)
    n = av.num_splats
    av = av.replace(means_local=torch.randn(n, 3, generator=g) * 0.2,
                    quats_local=torch.randn(n, 4, generator=g),
                    log_scales_local=torch.randn(n, 3, generator=g) - 1,
                    opacity_logits=torch.randn(n, generator=g),
                    sh=torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g))
    return av, verts, faces


def test_round_trip_degree_3(tmp_path):
    av, verts, faces = _avatar_and_mesh(3)
    path = export_ply(av, tmp_path / "sub" / "head.ply", vertices=verts, faces=faces)
    back = read_ply(path)
    wg = bind(av, verts, faces)
    assert torch.allclose(back.means, wg.means[0], atol=1e-6)
    assert torch.allclose(back.quats, wg.quats[0], atol=1e-6)
    assert torch.allclose(back.log_scales.exp(), wg.scales[0], rtol=1e-5)
    assert torch.allclose(back.opacity_logits, av.opacity_logits)
    assert torch.equal(back.sh, av.sh) and back.sh_degree == 3
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["head.ply"]  # no temp left


def test_header_is_standard_3dgs(tmp_path):
    av, verts, faces = _avatar_and_mesh(1)
    path = export_ply(av, tmp_path / "a.ply", vertices=verts[None], faces=faces)
    raw = path.read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    head = raw[:end].decode().splitlines()
    props = [ln.split()[-1] for ln in head if ln.startswith("property")]
    assert head[:3] == ["ply", "format binary_little_endian 1.0", f"element vertex {av.num_splats}"]
    assert props == (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
                     + [f"f_rest_{i}" for i in range(9)]
                     + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    assert len(raw) - end == av.num_splats * len(props) * 4
    row0 = np.frombuffer(raw, "<f4", count=len(props), offset=end)
    # f_rest is channel-major: f_rest_0..2 are the 3 degree-1 coefficients of the red channel
    assert np.allclose(row0[9:12], av.sh[0, 1:, 0].numpy())
    assert np.allclose(row0[3:6], 0)
