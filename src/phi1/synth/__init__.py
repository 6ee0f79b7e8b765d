"""Exercise and textbook data: CodeExercises records (mined now, synthetic later)."""
