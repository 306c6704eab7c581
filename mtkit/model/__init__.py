"""The model: embeddings, recurrent cells, attention, encoder, decoder, loss and checkpoints."""
