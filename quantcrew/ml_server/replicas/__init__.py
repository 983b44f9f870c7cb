"""The ML server as Ray Serve replicas (``quantcrew-server --ray``; the optional ``ray`` extra).

Each replica is one process running the very app ``create_app`` builds, lifespan included, on
a home it shares with the other replicas (the home's lock taken shared). Only
:mod:`.deployment` and :mod:`.serve`'s functions import Ray; :mod:`.options` turns the
settings into Serve's options without it.
"""
