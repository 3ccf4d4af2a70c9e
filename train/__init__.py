"""ssgan.train: the SemanticStyleGAN training recipe, data through Hugging Face datasets."""
