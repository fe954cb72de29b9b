"""The stages of the distillation workflow, one module each, glue between the run store and the
libraries in data/, teachers/ and students/."""
