"""Instruction tuning (SFT): the chat template and its role markers (:mod:`tonsai.sft.template`),
reading instruction data (:mod:`tonsai.sft.data`), and encoding, loss masking and packing of
conversations into training blocks (:mod:`tonsai.sft.pack`)."""
