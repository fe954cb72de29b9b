"""Student fine-tuning (transformers + peft, Ray Train), chat formatting and packing, evaluation,
publishing."""
