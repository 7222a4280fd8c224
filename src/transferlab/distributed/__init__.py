"""Many processes: DDP launch and clean-up, ranks, timm-aware sync BatchNorm, the start method."""
