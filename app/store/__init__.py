"""MongoDB persistence: every database call of Tandem lives in this package.

The store uses only calls that both PyMongo's ``AsyncCollection`` and
mongomock-motor offer (``find_one``, ``find``, ``insert_one``, ``update_one``,
``find_one_and_update``, ``replace_one``, ``delete_one``, ``create_index``,
``count_documents``), so the same code runs on a real MongoDB and on the embedded
in-memory default.
"""
