"""Output to people: candidate sets, bundles, the HTML report, ML-vs-DFT parity."""
