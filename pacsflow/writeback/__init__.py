"""Writing results where clinicians work: archive (SR/SEG), RIS (ORU), worklist, EHR,
notifications. Every writer is idempotent: the ledger records what was delivered."""
