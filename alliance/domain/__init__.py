"""The domain core: rules of the books, free of Flask and SQLAlchemy."""
