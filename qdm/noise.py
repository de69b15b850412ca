"""The old home of the quantum noise options, kept so that old imports work: shots and channels
now live in qdm.quantum.noisy, the quantum epsilon source in qdm.quantum.epsilon, the noise level
over t and the sampling of t in qdm.timesteps."""
from qdm.errors import check_choice
from qdm.quantum.circuit import final_state
from qdm.quantum.epsilon import (EPS_SOURCES, bits_to_uniform, eps_function, hadamard_bit_probability,
                                 quantum_bits, quantum_randn, quantum_uniform)
from qdm.quantum.noisy import (CHANNELS, DIRECT_SHOTS, MAX_SHOTS, check_gate_noise, flip_probability,
                               multinomial_counts, noisy_outputs, paper_channel_exponents,
                               paper_noisy_expectation, paper_probabilities, paper_shot_bits, sample_paulis,
                               sampled_counts, shot_estimate, shots_at)
from qdm.timesteps import LEVEL_SHAPES, T_SAMPLING, noise_level, sample_t, t_probabilities

__all__ = ["CHANNELS", "DIRECT_SHOTS", "EPS_SOURCES", "LEVEL_SHAPES", "MAX_SHOTS", "T_SAMPLING", "bits_to_uniform",
           "check_choice", "check_gate_noise", "eps_function", "final_state", "flip_probability",
           "hadamard_bit_probability", "multinomial_counts", "noise_level", "noisy_outputs",
           "paper_channel_exponents", "paper_noisy_expectation", "paper_probabilities", "paper_shot_bits",
           "quantum_bits", "quantum_randn", "quantum_uniform", "sample_paulis", "sample_t", "sampled_counts",
           "shot_estimate", "shots_at", "t_probabilities"]
