"""One run, one way down: compose → check → decide → build once → fit → test → write results."""
