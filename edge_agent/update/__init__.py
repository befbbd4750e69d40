"""The agent's update path: a pure state machine and the pieces around it.

    states.py events.py actions.py   the machine's vocabulary: where it is, what it hears, what it asks for
    table.py                         the transition table, one literal row per (state, event kind)
    handlers.py                      what each row does; context.py what the machine keeps between events
    probation.py                     the rows of a model on probation: health check, rollback, crash loop
    machine.py                       the Updater: looks a row up, runs it, returns actions
    journal.py                       the saved state a restart resumes from
    chunks.py artifact_choice.py     which chunks to ask for next; which artifact of a manifest to fetch
    jobs.py                          the slow steps (verify, load, self-test) run off the message thread
    recovery.py                      at start: restore the serving model, square the journal with the disk
"""
