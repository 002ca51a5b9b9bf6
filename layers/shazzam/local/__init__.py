"""Local (no-cloud) helpers: the bundled sample shop and friends."""
