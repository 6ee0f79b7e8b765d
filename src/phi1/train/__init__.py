"""Tokenization/packing, the training loop (pretrain, finetune), checkpoints, export."""
