"""The papers' networks, built only from convrepro.nn layers (+ Linear, activations, dropout)."""
