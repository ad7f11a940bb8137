"""Training: fine-tuning backbones (finetune) and end-to-end Fisher-vector layers (fisher_e2e)."""
