"""Defenses. A defense sees a model, clean holding data and (for unlearning) a trigger pool;
it never imports an attack and never receives the true trigger or target label."""
