"""Sentences from a conditioning vector, shared by the captioning and video-description tasks: the
tokenizer and vocabulary, caption metrics, conditioned recurrent decoders, decoding (beam search,
sampling, scoring) and the teacher-forced training loop."""
