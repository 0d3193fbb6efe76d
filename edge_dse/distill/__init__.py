"""Training-time code (export, quantisation, distillation): needs the train extra, never imported at run time."""
