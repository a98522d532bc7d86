"""Cost budgets: per task, per project per day, per rule per day, and the whole service per day and
per month (days in the service's time zone).  ``schema.py`` is the ``budgets`` config section,
``ledger.py`` the spend per period and the admission check the supervisor calls before a start.
"""
