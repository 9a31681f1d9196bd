"""``python -m dynavatar`` (also what ``accelerate launch -m dynavatar`` runs)."""

from .cli import main

main()
