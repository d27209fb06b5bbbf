"""`robot-compress demo`: the whole product on one machine, with a scripted link failure."""
