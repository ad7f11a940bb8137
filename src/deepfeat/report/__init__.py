"""Reports: results.json with provenance, report.md, plots."""
