"""Rollback wording: what was undone, what could not be, and what only tidied up."""

from __future__ import annotations

from pci_vgpu import rollback


def _fail() -> None:
    raise RuntimeError("disk on fire")


def test_a_claim_already_freed_is_no_incomplete_rollback():
    undo = rollback.Undo()
    undo.push("re-read the inventory", lambda: None, cleanup=True)
    undo.push("freed the claim", lambda: "the claim had already been freed")
    undo.run()
    assert undo.summary() == ("rolled back: the claim had already been freed, "
                              "re-read the inventory")


def test_a_failed_cleanup_is_a_note_and_a_failed_step_is_incomplete():
    undo = rollback.Undo()
    undo.push("re-read the inventory", _fail, cleanup=True)
    undo.push("freed the claim", lambda: None)
    undo.run()
    assert undo.summary() == ("rolled back: freed the claim; could not re-read the inventory "
                              "(RuntimeError: disk on fire): run 'pci-vgpu pool list --refresh'")
    undo = rollback.Undo()
    undo.push("removed vGPU x", _fail)
    undo.run()
    assert undo.summary().startswith("rollback incomplete: removed vGPU x (RuntimeError")
    assert undo.summary().endswith("run 'pci-vgpu host reconcile'")
