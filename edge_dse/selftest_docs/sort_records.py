"""Sorting records in Python.

sorted(items) returns a new list and leaves the original alone; items.sort() sorts the list in
place and returns None. Both take key=, a function computed once per element, and reverse=True
for descending order. Python's sort is stable, so sorting by a secondary key first and then by
the primary key gives a correct multi-level order.
"""

from operator import itemgetter

people = [("Ada", 36), ("Grace", 45), ("Alan", 41)]

by_age = sorted(people, key=itemgetter(1))
oldest_first = sorted(people, key=itemgetter(1), reverse=True)
people.sort(key=lambda person: person[0].lower())
