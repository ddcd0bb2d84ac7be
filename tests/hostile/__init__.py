"""The hostile-server suite: a table of scripted misbehaviours every runner must survive.

``hostile.cases.CASES`` is the table (see tests/hostile/README.md); the tests
are in test_hostile.py; bench/hostile_compare.py runs the table against
smtplib and aiosmtplib too.
"""
