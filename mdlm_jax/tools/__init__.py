"""Stand-alone tools (benchmarks); they import the library, nothing imports them."""
