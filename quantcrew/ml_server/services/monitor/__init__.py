"""The monitor family: the prediction log and outcomes, live quality, drift, alerts, retraining gates."""
