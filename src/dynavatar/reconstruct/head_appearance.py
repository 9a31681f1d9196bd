"""The demo head's appearance as splats bound to its triangles: what ``dynavatar demo`` draws and saves.

A newcomer's first picture of the toolkit is this head, so it has to read as a person at a glance,
while being made entirely by the project (no scanned or licensed data, no downloaded textures).
Every visible part is a set of splats in the rest pose, each bound to one triangle of the head model
(``SplatSet``), then converted into the triangle-local parameters of a ``GaussianAvatar``:

- skin, lips, ears, neck and the mouth bag: flat discs on the surface whose covariance is the
  triangle's own (or a sub-triangle's, where colour varies faster than the mesh: lips, lid rims),
  coloured by smooth per-vertex fields (``head_colours``);
- eyeballs: dense discs on the eyeball spheres, coloured by their angle from the eyeball's forward
  axis in the rest pose (pupil, iris, limbus, sclera), so the gaze follows the eye joints for free;
  the socket cup that closes the eye openings is left out (it would hide the eyeballs);
- hair, eyebrows and lashes: elongated splats along combed strands (``hair_splats``);
- shoulders in a dark top: the model's torso sheet (``FlameModel.with_torso``), here a rounded
  trunk rather than the fitter's flat grid (``shoulders``).

The splats' colours are shaded under a fixed light. ``HeadAppearance.shade`` re-shades them for any
posed mesh (the performance video), and ``bake`` stores the rest-pose shading in the SH colours of
the ``GaussianAvatar`` that the demo saves and edits.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor

from ..flame import FlameModel, FlameParams
from ..gaussians.avatar import GaussianAvatar, rgb_to_sh
from ..geometry.labels import NUM_LABELS
from ..geometry.mesh import vertex_components, vertex_normals
from ..geometry.rotations import matrix_to_quaternion
from ..geometry.triangles import triangle_frames

__all__ = ["SplatSet", "HeadGeometry", "HeadAppearance", "surface_splats", "sphere_splats", "light_splats",
           "KEY_LIGHT"]

#: Directions *towards* the lights, FLAME/world axes (x: subject's left = image right, y up, z to camera).
KEY_LIGHT = (0.45, 0.55, 0.70)
FILL_LIGHT = (-0.75, 0.15, 0.55)
RIM_LIGHT = (-0.2, 0.6, -0.75)


@dataclasses.dataclass
class SplatSet:
    """Splats in the rest pose (FLAME coordinates, metres), before binding; one row per splat."""

    tri: np.ndarray  # [N] int64  triangle each splat is bound to
    pos: np.ndarray  # [N, 3]  centre
    frame: np.ndarray  # [N, 3, 3]  orthonormal axes as columns (axis 1 is the thin one of a disc)
    scale: np.ndarray  # [N, 3]  standard deviation along each axis (m)
    opacity: np.ndarray  # [N]
    albedo: np.ndarray  # [N, 3]  sRGB in [0, 1]
    normal: np.ndarray  # [N, 3]  shading normal (unit)
    tangent: np.ndarray  # [N, 3]  strand direction for hair-like splats, zero for surfaces
    occlusion: np.ndarray  # [N]  ambient occlusion in [0, 1]
    gloss: np.ndarray  # [N]  specular strength
    label: np.ndarray  # [N] int64  index into LABEL_NAMES

    def __len__(self) -> int:
        return len(self.tri)

    @staticmethod
    def cat(sets: list["SplatSet"]) -> "SplatSet":
        sets = [s for s in sets if len(s)]
        if not sets:
            z = np.zeros
            return SplatSet(z(0, np.int64), z((0, 3)), z((0, 3, 3)), z((0, 3)), z(0), z((0, 3)), z((0, 3)), z((0, 3)),
                            z(0), z(0), z(0, np.int64))
        return SplatSet(**{f.name: np.concatenate([getattr(s, f.name) for s in sets])
                           for f in dataclasses.fields(SplatSet)})

    def subset(self, keep: np.ndarray) -> "SplatSet":
        return SplatSet(**{f.name: getattr(self, f.name)[keep] for f in dataclasses.fields(SplatSet)})


@dataclasses.dataclass
class HeadGeometry:
    """The rest-pose head that the appearance builders read (numpy float64)."""

    verts: np.ndarray  # [V, 3]  rest vertices (shape and expression zero), torso sheet included
    faces: np.ndarray  # [F, 3]
    normals: np.ndarray  # [V, 3]  shading normals (``_shading_normals``)
    region: np.ndarray | None  # [V] index into ``names`` (None: the head has no regions)
    names: list[str]
    head: np.ndarray  # [V] bool  the largest connected component (the head surface)
    eyes: list[tuple[np.ndarray, float, np.ndarray]]  # (centre [3], radius, vertex ids) of each eyeball, left first
    jaw_weight: np.ndarray  # [V]  skinning weight of the jaw joint
    rigid: np.ndarray  # [V] bool  moved by the head joint alone (hair can bind there)

    @classmethod
    def of(cls, model: FlameModel, shape: Tensor | None = None) -> "HeadGeometry":
        """The rest pose of ``model`` with identity ``shape`` [n_shape] (default: zero)."""
        p = model.zero_params(1)
        if shape is not None:
            p.shape[0] = shape.to(p.shape)
        v = model(p, landmark_set=None).vertices[0]
        verts = v.detach().cpu().double().numpy()
        faces = model.faces.cpu().numpy().astype(np.int64)
        normals = _shading_normals(verts, faces)
        region = None if model.vertex_region is None else model.vertex_region.cpu().numpy()
        weights = np.zeros((len(verts), 5))
        w = model.lbs_weights.cpu().double().numpy()
        weights[: len(w), : w.shape[1]] = w
        comp = vertex_components(faces, len(verts))
        sizes = np.bincount(comp)
        head = comp == np.argmax(sizes)
        eyes = []
        for c in np.argsort(-sizes)[1:]:  # the two largest spheres among the other components
            ids = np.flatnonzero(comp == c)
            centre = verts[ids].mean(0)
            r = np.linalg.norm(verts[ids] - centre, axis=1)
            if len(ids) >= 50 and r.std() < 0.05 * r.mean() and len(eyes) < 2:  # a sphere: an eyeball
                eyes.append((centre, float(r.mean()), ids))
        eyes.sort(key=lambda e: -e[0][0])  # the subject's left (+x) first
        expr_still = np.ones(len(verts), dtype=bool)
        if model.n_expr:
            dirs = model.shapedirs[..., model.n_shape:].detach().cpu().numpy()
            expr_still[: len(dirs)] = np.abs(dirs).sum(axis=(1, 2)) < 1e-7  # metres, all components together
        rigid = (weights[:, 1] > 0.999) & expr_still & head
        return cls(verts, faces, normals, region, list(model.region_names or []), head,
                   eyes if len(eyes) == 2 else [], weights[:, 2], rigid)

    def in_region(self, *names: str) -> np.ndarray:
        """[V] bool: vertices of any of the named regions (none when the head has no regions)."""
        if self.region is None:
            return np.zeros(len(self.verts), dtype=bool)
        ids = [self.names.index(n) for n in names if n in self.names]
        return np.isin(self.region, ids)

    def face_region(self) -> np.ndarray:
        """[F] the majority region of each triangle's vertices (-1 without regions)."""
        if self.region is None:
            return np.full(len(self.faces), -1)
        r = self.region[self.faces]  # [F, 3]
        return np.where(r[:, 1] == r[:, 2], r[:, 1], r[:, 0])


def _shading_normals(verts: np.ndarray, faces: np.ndarray, iterations: int = 14, keep: float = 0.25) -> np.ndarray:
    """Vertex normals for shading: those of the mesh blended with those of a smoothed copy of it.

    The generated head is faceted at the scale of a few triangles (small ridges, dents); lit with its
    own normals they read as lumps. Smoothed normals light it like skin over soft tissue, while the
    silhouette keeps the true shape.  -> [V, 3]"""
    from ..geometry.mesh import vertex_adjacency

    own, _ = vertex_normals(verts, faces)
    adj = vertex_adjacency(faces, len(verts))
    deg = np.maximum(np.asarray(adj.sum(1)).ravel(), 1)[:, None]
    smooth = verts.copy()
    for _ in range(iterations):
        smooth = 0.5 * smooth + 0.5 * (adj @ smooth) / deg
    soft, _ = vertex_normals(smooth, faces)
    n = keep * own + (1 - keep) * soft
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


# ---------------------------------------------------------------------------------------- sampling
def _sub_barycentrics(level: int) -> np.ndarray:
    """Centroids of the level^2 sub-triangles of a triangle split ``level`` times per edge. -> [level^2, 3]"""
    pts = []
    for i in range(level):
        for j in range(level - i):
            pts.append(((i + 1 / 3) / level, (j + 1 / 3) / level))
            if i + j <= level - 2:
                pts.append(((i + 2 / 3) / level, (j + 2 / 3) / level))
    ab = np.array(pts)
    return np.c_[ab, 1.0 - ab.sum(1)]


def _triangle_discs(tri_verts: np.ndarray, level: np.ndarray, spread: float, thin: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Flat Gaussian discs matching each (sub-)triangle's own second moment.

    The covariance of a uniform triangle is (1/12) sum_i d_i d_i^T (d_i: corners minus centroid); a
    splat with ``spread``^2 times it (per in-plane axis) covers its triangle without holes, and long,
    thin triangles (lid rims, lip rings) get long, thin splats. tri_verts [N, 3, 3]; level [N]
    (sub-triangles are the triangle scaled by 1/level). -> (frame [N, 3, 3], scale [N, 3])
    """
    d = tri_verts - tri_verts.mean(1, keepdims=True)
    cov = np.einsum("nij,nik->njk", d, d) / 12.0 / (level[:, None, None] ** 2)  # [N, 3, 3]
    w, vecs = np.linalg.eigh(cov)  # ascending: vecs[..., 0] is the normal
    n_geo = np.cross(tri_verts[:, 1] - tri_verts[:, 0], tri_verts[:, 2] - tri_verts[:, 0])
    n_geo /= np.maximum(np.linalg.norm(n_geo, axis=1, keepdims=True), 1e-30)
    a0 = vecs[..., 2]
    frame = np.stack([a0, n_geo, np.cross(a0, n_geo)], -1)
    s_long, s_short = np.sqrt(np.maximum(w[:, 2], 1e-14)), np.sqrt(np.maximum(w[:, 1], 1e-14))
    s_short = np.maximum(s_short, 0.35 * s_long)  # slivers still get some width
    scale = spread * np.stack([s_long, thin * s_long, s_short], -1)
    return frame, scale


def surface_splats(geo: HeadGeometry, tris: np.ndarray, level: np.ndarray, albedo: np.ndarray,
                   occlusion: np.ndarray, gloss: np.ndarray, label: np.ndarray, opacity: float = 0.99,
                   spread: float = 2.3, thin: float = 0.12) -> SplatSet:
    """Discs on triangles ``tris`` [T] (``level`` [T] sub-triangles per edge), with per-vertex
    ``albedo`` [V, 3], ``occlusion`` [V], ``gloss`` [V] interpolated at each disc's centre and
    ``label`` [T] per triangle. Shading normals are the interpolated vertex normals: the head shades
    smoothly although its triangles are flat."""
    out = []
    for lv in np.unique(level):
        t = tris[level == lv]
        bary = _sub_barycentrics(int(lv))  # [S, 3]
        corners = geo.faces[t]  # [T, 3]
        cv = geo.verts[corners]  # [T, 3, 3]
        pos = np.einsum("sk,tkc->tsc", bary, cv).reshape(-1, 3)

        def interp(field: np.ndarray) -> np.ndarray:
            f = field[corners]  # [T, 3, ...]
            return np.einsum("sk,tk...->ts...", bary, f).reshape(len(t) * len(bary), *field.shape[1:])

        frame, scale = _triangle_discs(cv, np.full(len(t), float(lv)), spread, thin)
        s = len(bary)
        normal = interp(geo.normals)
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
        out.append(SplatSet(np.repeat(t, s), pos, np.repeat(frame, s, 0), np.repeat(scale, s, 0),
                            np.full(len(pos), opacity), interp(albedo).clip(0, 1), normal, np.zeros_like(pos),
                            interp(occlusion), interp(gloss), np.repeat(label[level == lv], s)))
    return SplatSet.cat(out)


def fibonacci_directions(n: int, max_angle: float, power: float = 1.0) -> np.ndarray:
    """``n`` unit vectors spread over the cap within ``max_angle`` of +z; ``power`` > 1 packs them
    closer near the pole (where the iris needs detail).  -> [n, 3]"""
    i = np.arange(n) + 0.5
    u = (i / n) ** power  # fraction of the cap's area
    cos_t = 1.0 - u * (1.0 - np.cos(max_angle))
    phi = i * np.pi * (3.0 - np.sqrt(5.0))
    sin_t = np.sqrt(np.maximum(1.0 - cos_t ** 2, 0.0))
    return np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], -1)


def sphere_splats(geo: HeadGeometry, centre: np.ndarray, radius: float, vertex_ids: np.ndarray,
                  dirs: np.ndarray, spacing: np.ndarray, forward: np.ndarray) -> tuple[SplatSet, np.ndarray]:
    """Discs tangent to an eyeball sphere in directions ``dirs`` [M, 3] (around +z, rotated so +z
    becomes ``forward``), each bound to the eyeball triangle nearest to it; ``spacing`` [M] their
    spacing (m). Colours are left for the caller. -> (SplatSet, angle from ``forward`` [M])"""
    z = forward / np.linalg.norm(forward)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    rot = np.stack([x, np.cross(z, x), z], -1)  # columns: where the local x, y, z axes go
    d = dirs @ rot.T
    pos = centre + radius * d
    tris = np.flatnonzero(np.isin(geo.faces, vertex_ids).all(1))
    cen = geo.verts[geo.faces[tris]].mean(1)
    tri = tris[np.argmin(((pos[:, None] - cen[None]) ** 2).sum(-1), 1)]
    t1 = np.cross(d, z)
    t1 = np.where(np.linalg.norm(t1, axis=1, keepdims=True) < 1e-6, x, t1)
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    frame = np.stack([t1, d, np.cross(t1, d)], -1)
    sig = 0.62 * spacing
    scale = np.stack([sig, 0.12 * sig, sig], -1)
    m = len(d)
    angle = np.arccos(np.clip(d @ z, -1.0, 1.0))
    return SplatSet(tri, pos, frame, scale, np.full(m, 0.98), np.zeros((m, 3)), d, np.zeros((m, 3)),
                    np.ones(m), np.zeros(m), np.zeros(m, dtype=np.int64)), angle


# ---------------------------------------------------------------------------------------- shading
def light_splats(albedo: Tensor, normal: Tensor, tangent: Tensor, occlusion: Tensor, gloss: Tensor,
                 to_camera: Tensor) -> Tensor:
    """sRGB colour of each splat under the fixed lights.  all [N, 3] / [N]; -> [N, 3]

    Surfaces: wrapped Lambert (soft terminator, as skin scatters light) from a key, a fill and a rim
    light, a sky/ground ambient, and a Blinn-Phong highlight. Hair-like splats (non-zero tangent):
    Kajiya-Kay, the strand model: diffuse by the sine between strand and light, a highlight band
    where the half vector is perpendicular to the strand.
    """
    key, fill, rim = (torch.tensor(v, dtype=albedo.dtype, device=albedo.device) for v in (KEY_LIGHT, FILL_LIGHT,
                                                                                           RIM_LIGHT))
    key, fill, rim = key / key.norm(), fill / fill.norm(), rim / rim.norm()
    hair = tangent.norm(dim=-1) > 0.5  # [N]
    t = torch.nn.functional.normalize(tangent, dim=-1)
    n = torch.nn.functional.normalize(normal, dim=-1)
    v = torch.nn.functional.normalize(to_camera, dim=-1)
    wrap = 0.35
    ndl = ((n @ key + wrap) / (1 + wrap)).clamp_min(0)
    sky = 0.5 + 0.5 * n[:, 1]
    ambient = 0.24 + 0.12 * sky
    diffuse = 0.72 * ndl + 0.16 * (n @ fill).clamp_min(0) + 0.22 * (n @ rim).clamp_min(0)
    h = torch.nn.functional.normalize(key[None] + v, dim=-1)
    spec = gloss * (n * h).sum(-1).clamp_min(0) ** 40
    # strands: sine of the tangent against the light / the half vector
    sin_tl = (1 - (t @ key) ** 2).clamp_min(0).sqrt()
    sin_th = (1 - ((t * h).sum(-1)) ** 2).clamp_min(0).sqrt()
    hair_diffuse = (0.25 + 0.75 * ndl) * (0.45 + 0.55 * sin_tl) * 0.95 + 0.25 * (n @ rim).clamp_min(0)
    hair_spec = gloss * sin_th ** 60 * (0.6 + 0.4 * ndl)
    light = torch.where(hair, hair_diffuse, diffuse)
    spec = torch.where(hair, hair_spec, spec)
    # shadowed skin turns a little redder (light scattered under the skin)
    tint = torch.tensor([1.0, 0.93, 0.90], dtype=albedo.dtype, device=albedo.device)
    shadow = (1 - ndl)[:, None] * (~hair)[:, None] * (1 - tint)[None]
    colour = albedo * occlusion[:, None] * (ambient + light)[:, None] * (1 - 0.6 * shadow)
    return (colour + spec[:, None] * occlusion[:, None]).clamp(0, 1)


@dataclasses.dataclass
class HeadAppearance:
    """The demo head as a GaussianAvatar plus what re-shading it needs (per splat, triangle-local)."""

    gaussians: GaussianAvatar  # one-hot labels; sh: the colours shaded in the rest pose (``bake``)
    model: FlameModel  # the head the splats are bound to (with its shoulders as the torso sheet)
    albedo: Tensor  # [N, 3]
    normal_local: Tensor  # [N, 3] shading normal in the binding triangle's frame
    tangent_local: Tensor  # [N, 3] strand direction in that frame (zero for surfaces)
    occlusion: Tensor  # [N]
    gloss: Tensor  # [N]
    shape: Tensor | None = None  # [n_shape] the identity the splats were placed on (None: zero)

    @classmethod
    def from_splats(cls, s: SplatSet, model: FlameModel, geo: HeadGeometry, shape: Tensor | None = None
                    ) -> "HeadAppearance":
        """Triangle-local parameters of ``s`` in the rest pose (DESIGN.md §3's binding, inverted)."""
        dev = model.v_template.device
        R, k, T = triangle_frames(torch.from_numpy(geo.verts), torch.from_numpy(geo.faces))  # float64
        tri = torch.from_numpy(s.tri)
        R, k, T = R[tri], k[tri], T[tri]  # [N, 3, 3], [N], [N, 3]
        Rt = R.transpose(-1, -2)
        pos, frame = torch.from_numpy(s.pos), torch.from_numpy(s.frame)
        means = (Rt @ (pos - T)[..., None])[..., 0] / k[:, None]
        local = Rt @ frame
        local = local * torch.sign(torch.linalg.det(local))[:, None, None]  # proper rotations only
        quats = matrix_to_quaternion(local)
        log_scales = torch.log(torch.from_numpy(s.scale).clamp_min(1e-7) / k[:, None])
        p = torch.from_numpy(s.opacity).clamp(1e-4, 1 - 1e-4)
        labels = torch.nn.functional.one_hot(torch.from_numpy(s.label), NUM_LABELS)
        f32 = dict(dtype=torch.float32, device=dev)
        g = GaussianAvatar(means.to(**f32), quats.to(**f32), log_scales.to(**f32), torch.logit(p).to(**f32),
                           torch.zeros(len(s), 1, 3, **f32), tri.to(dev), labels.to(**f32))
        vec = lambda a: (Rt @ torch.from_numpy(a)[..., None])[..., 0].to(**f32)  # noqa: E731
        return cls(g, model, torch.from_numpy(s.albedo).to(**f32), vec(s.normal), vec(s.tangent),
                   torch.from_numpy(s.occlusion).to(**f32), torch.from_numpy(s.gloss).to(**f32),
                   None if shape is None else shape.detach().to(**f32))

    @property
    def num_splats(self) -> int:
        return self.gaussians.num_splats

    def _posed(self, vertices: Tensor, camera_centre: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """World normals, tangents [N, 3] and the direction to the camera [N, 3] on ``vertices`` [V, 3]."""
        R, k, T = triangle_frames(vertices, self.model.faces.to(vertices.device))
        b = self.gaussians.binding
        R, k, T = R[b], k[b], T[b]
        world = lambda a: (R @ a[..., None])[..., 0]  # noqa: E731
        means = k[:, None] * world(self.gaussians.means_local) + T
        cam = torch.zeros(3, device=vertices.device) if camera_centre is None else camera_centre.to(vertices)
        return world(self.normal_local), world(self.tangent_local), cam - means

    def shade(self, vertices: Tensor, camera_centre: Tensor | None = None) -> Tensor:
        """Colours [N, 3] of the splats on the posed mesh ``vertices`` [V, 3] (world, metres), lit
        by the fixed lights and seen from ``camera_centre`` [3] (default: the origin)."""
        n, t, to_cam = self._posed(vertices, camera_centre)
        return light_splats(self.albedo, n, t, self.occlusion, self.gloss, to_cam)

    def facing(self, vertices: Tensor, camera_centre: Tensor | None = None, threshold: float = -0.3) -> Tensor:
        """bool [N]: splats whose shading normal does not point away from the camera.

        The head, the hair mass and the trunk are closed or backed surfaces, so a splat facing away
        is hidden behind ones facing the camera; leaving those out of a render changes nothing
        visible (the margin keeps the silhouette) and halves the CPU renderer's work."""
        n, t, to_cam = self._posed(vertices, camera_centre)
        facing = (n * torch.nn.functional.normalize(to_cam, dim=-1)).sum(-1)
        # a hanging strand's normal is that of the nearest skin (the neck behind it, say), so strands
        # are only left out when they face right away: the inside of the hair is seen past the face
        limit = torch.where(t.norm(dim=-1) > 0.5, torch.full_like(facing, -0.8), torch.full_like(facing, threshold))
        return facing > limit

    def bake(self, params: FlameParams) -> GaussianAvatar:
        """The GaussianAvatar with the shading of the pose ``params`` [1] stored as its colour."""
        with torch.no_grad():
            verts = self.model(params.to(self.model.v_template.device), landmark_set=None).vertices[0]
            rgb = self.shade(verts)
        sh = rgb_to_sh(rgb.clamp(0.0, 1.0))[:, None]
        return self.gaussians.replace(sh=sh)

