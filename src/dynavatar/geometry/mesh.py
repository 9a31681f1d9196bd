"""Triangle-mesh basics in numpy/scipy: normals and areas, edges and adjacency, open boundaries, the
uniform Laplacian, connected components, a surface's size.

The building blocks of closest-point search (``closest_point``) and registration (``registration``).
Meshes are ``verts [V, 3]`` float64 and ``faces [F, 3]`` int64; ``as_float64`` / ``as_index_array`` take
numpy or torch.  numpy/scipy rather than torch: head meshes are small (thousands of vertices), the sparse
matrices here feed scipy's sparse solvers, and single-threaded numpy does not compete with other
processes for cores the way torch's intra-op threads do.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components

__all__ = ["as_float64", "as_index_array", "face_normals", "vertex_normals", "vertex_adjacency", "boundary_vertices",
           "uniform_laplacian", "vertex_components", "rms_radius"]


def as_float64(x: Any) -> np.ndarray:
    """numpy or torch -> numpy float64 (a copy only where needed)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def as_index_array(faces: Any) -> np.ndarray:
    """numpy or torch indices (faces [F, 3], vertex ids [N]) -> numpy int64."""
    if isinstance(faces, torch.Tensor):
        faces = faces.detach().cpu().numpy()
    return np.asarray(faces, dtype=np.int64)


def face_normals(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals [F,3] (zero for degenerate triangles) and areas [F]."""
    tri = verts[faces]  # [F, 3, 3]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(n, axis=1)
    return n / np.maximum(length, 1e-30)[:, None], 0.5 * length


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted unit vertex normals [V,3] and vertex areas [V] (a third of each adjacent face)."""
    fn, area = face_normals(verts, faces)
    n = np.zeros_like(verts)
    a = np.zeros(len(verts))
    for k in range(3):
        np.add.at(n, faces[:, k], fn * area[:, None])
        np.add.at(a, faces[:, k], area / 3.0)
    return n / np.maximum(np.linalg.norm(n, axis=1), 1e-30)[:, None], a


def _edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique undirected edges [E,2] (sorted pairs) and how many faces use each [E]."""
    e = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    return np.unique(e, axis=0, return_counts=True)


def vertex_adjacency(faces: np.ndarray, n_verts: int) -> sp.csr_matrix:
    """Symmetric 0/1 vertex adjacency [V,V]."""
    e, _ = _edges(faces)
    a = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n_verts, n_verts))
    return ((a + a.T) > 0).astype(np.float64).tocsr()


def boundary_vertices(faces: np.ndarray, n_verts: int) -> np.ndarray:
    """[V] bool: vertices on an edge used by one face only (holes, the open neck)."""
    e, count = _edges(faces)
    out = np.zeros(n_verts, dtype=bool)
    out[e[count == 1].ravel()] = True
    return out


def uniform_laplacian(faces: np.ndarray, n_verts: int) -> sp.csr_matrix:
    """[V,V] ``L x = x_v - mean(neighbours)``; rows of unreferenced vertices are zero."""
    adj = vertex_adjacency(faces, n_verts)
    deg = np.asarray(adj.sum(1)).ravel()
    inv = np.where(deg > 0, 1.0 / np.maximum(deg, 1), 0.0)
    return (sp.diags((deg > 0).astype(np.float64)) - sp.diags(inv) @ adj).tocsr()


def vertex_components(faces: np.ndarray, n_verts: int) -> np.ndarray:
    """[V] connected-component label per vertex (head, eyeballs, ... are separate components)."""
    return connected_components(vertex_adjacency(faces, n_verts), directed=False)[1].astype(np.int64)


def rms_radius(verts: np.ndarray, faces: np.ndarray) -> float:
    """Area-weighted RMS distance of the surface from its centroid: the head's size (m)."""
    _, area = vertex_normals(verts, faces)
    area = area / area.sum()
    return float(np.sqrt(area @ ((verts - area @ verts) ** 2).sum(1)))
