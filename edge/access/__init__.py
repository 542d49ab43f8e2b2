"""Access rules (groups, schedules, anti-passback, two-person) and the door state machine."""
