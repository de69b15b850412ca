"""No import cycle anywhere in qdm: every import of a qdm module, at the top of a module or inside a
function, is an edge; the graph of qdm's modules must have no cycle. The old import paths still work."""
import ast
import importlib
from pathlib import Path

import qdm

ROOT = Path(qdm.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def imported_modules(name: str) -> set[str]:
    """The qdm modules that module ``name`` imports anywhere in its source."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{name}: a relative import, which this walk does not resolve"
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)   # from package import submodule
    return {m for m in found if m in MODULES and m != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the directed graph as a list of nodes (first = last), or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_in_qdm():
    graph = {name: imported_modules(name) for name in MODULES}
    assert "qdm.quantum.circuit" in graph["qdm.quantum.gate"]      # the walk sees imports
    assert "qdm.quantum.noisy" in graph["qdm.noise"]
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_old_import_paths_still_work():
    noise = importlib.import_module("qdm.noise")
    for name in ("CHANNELS", "LEVEL_SHAPES", "T_SAMPLING", "check_choice", "eps_function", "final_state",
                 "noise_level", "noisy_outputs", "paper_channel_exponents", "quantum_randn", "quantum_uniform",
                 "sample_t", "shots_at", "t_probabilities"):
        assert hasattr(noise, name), name
    quantum = importlib.import_module("qdm.quantum")
    for name in ("QuantumGate", "chain_permutation", "circuit_outputs", "closed_form_outputs", "exact_simulator",
                 "layer_gates", "make_qnode", "mps_outputs", "parity_sets", "statevector_outputs", "weight_shape"):
        assert hasattr(quantum, name), name
