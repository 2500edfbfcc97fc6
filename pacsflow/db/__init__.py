"""pacsflow's own state: outbox, orders, studies, worklist, writebacks, audit, drift records."""
