"""Packaging for dynavatar (setuptools, src/ layout)."""

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent


class BuildWithHead(build_py):
    """Ship the embedded default head (assets/flame/default_head.npz) and the CUDA sources inside
    the package, so non-editable installs run out of the box; editable installs read the
    checkout's assets/flame and cuda/ directly."""

    def run(self):
        super().run()
        pkg = Path(self.build_lib) / "dynavatar"
        # the embedded default head, and the CUDA sources that are compiled on first use
        for src, dst in ((ROOT / "assets" / "flame" / "default_head.npz", pkg / "_data" / "default_head.npz"),
                         (ROOT / "cuda" / "binding.cu", pkg / "gaussians" / "cuda" / "binding.cu")):
            if src.is_file():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)


# What the default, offline pipeline needs. Pins that matter (see DESIGN.md §7):
# mediapipe 0.10.21 is the last release with mediapipe.solutions and its models inside the wheel;
# it needs numpy<2 and protobuf<5. torch is pinned by the install's constraints file, not here.
INSTALL_REQUIRES = [
    "torch>=2.1",
    "numpy>=1.24,<2",
    "scipy>=1.10",
    "imageio>=2.31",
    "imageio-ffmpeg>=0.5",
    "pillow>=9",
    "gsplat==1.5.3",
    "mediapipe==0.10.21",
    "protobuf>=4.21,<5",
    "diffusers>=0.30",
    "transformers>=4.45",
    "accelerate>=0.34",
    "safetensors>=0.4",
    "tqdm>=4.66",
    "click>=8.1",
    "matplotlib>=3.7",
]

EXTRAS = {
    # FaRL face parsing through pyfacer. It pulls torchvision, which has no CPU build here:
    # install it only where a matching CUDA torch/torchvision pair exists.
    "facer": ["pyfacer>=0.0.4", "timm>=0.9"],
    # `dynavatar view`: the browser viewer is built on viser (its GUI, camera controls and websocket).
    "view": ["viser>=1.1.1,<1.2"],
    # Tests: smplx is an independent FLAME implementation used only as a numerical reference; viser
    # so the viewer's tests run (they drive it from a headless chromium, which .ci/run installs);
    # nbclient/nbformat/ipykernel execute the example notebooks (tests/test_examples.py).
    "test": ["pytest>=7.4", "pytest-timeout>=2.2", "smplx==0.1.28", "viser>=1.1.1,<1.2",
             "nbclient>=0.10", "nbformat>=5.9", "ipykernel>=6.29"],
}

setup(
    name="dynavatar",
    version="0.1.0",
    description="Animatable, text-editable 3D Gaussian head avatars (FLAME-bound) from ordinary videos",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8") if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    package_dir={"": "src"},
    packages=find_packages("src"),
    include_package_data=False,
    package_data={"dynavatar": ["_data/*.npz"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["dynavatar=dynavatar.cli:main"]},
    cmdclass={"build_py": BuildWithHead},
)
