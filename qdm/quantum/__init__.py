"""The quantum wing of qdm: the paper's quantum layer (Section IV-D, Eq. 7-8), its simulators, and
the quantum noise options of the abstract. Read in this order:

    circuit.py      the circuit, the CNOT chain, and the closed form of the paper's circuit (the
                    teaching: what the layer computes), with the plain statevector reference
    gate.py         ``circuit_outputs`` (one entry point for the circuit alone) and ``QuantumGate``
                    (the nn.Module of Eq. 8 for ``UNet(gate=...)``)
    mps.py          the exact matrix-product-state simulator (bond 2^(L-1), any width)
    qnode.py        the circuit as a PennyLane QNode: the reference, and the road to hardware
    noisy.py        shot noise and channel noise
    epsilon.py      a quantum source for the diffusion noise epsilon
    statevector.py  the fast statevector kernel (skippable on a first read)

Imports only go down this list's dependency order (circuit <- statevector, mps, qnode <- noisy
<- gate), never back up; tests/test_imports.py checks that no module of qdm imports itself
through others.
"""
from qdm.quantum.circuit import (ANGLES_PER_GATE, ANSATZE, bit_table, chain_bits, chain_permutation,
                                 check_ansatz, closed_form_outputs, cnot_chain, final_state, layer_gates,
                                 parity_sets, weight_shape)
from qdm.quantum.epsilon import EPS_SOURCES, eps_function, quantum_randn, quantum_uniform
from qdm.quantum.gate import BACKENDS, QuantumGate, check_backend, circuit_outputs
from qdm.quantum.mps import SIMULATORS, check_simulator, exact_simulator, mps_outputs
from qdm.quantum.noisy import CHANNELS, noisy_outputs
from qdm.quantum.qnode import make_qnode, pennylane_outputs
from qdm.quantum.statevector import statevector_outputs

__all__ = ["ANGLES_PER_GATE", "ANSATZE", "BACKENDS", "CHANNELS", "EPS_SOURCES", "SIMULATORS", "QuantumGate",
           "bit_table", "chain_bits", "chain_permutation", "check_ansatz", "check_backend", "check_simulator",
           "circuit_outputs", "closed_form_outputs", "cnot_chain", "eps_function", "exact_simulator",
           "final_state", "layer_gates", "make_qnode", "mps_outputs", "noisy_outputs", "parity_sets",
           "pennylane_outputs", "quantum_randn", "quantum_uniform", "statevector_outputs", "weight_shape"]
