"""Study batches: a YAML grid of notebook parameters, run with papermill, summarised into tidy tables."""
