"""Settings shared by every test tier."""

from __future__ import annotations

from hypothesis import settings

# Examples are judged by their result, never by how long one took: the suite
# runs on busy two-core CI machines where a per-example deadline only flakes.
settings.register_profile("dtf", deadline=None, print_blob=True)
settings.load_profile("dtf")
