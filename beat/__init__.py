"""Celery Beat for flowcloud: the periodic schedule built from the configuration.

``flowcloud.beat.schedule`` turns ``schedules:`` into Celery's ``beat_schedule``;
``flowcloud.beat.app`` is the Celery application ``flowcloud beat`` runs;
``flowcloud.beat.scheduler`` keeps the schedule and a lease in Redis, so several Beats
may run and one sends. Beat only sends messages: the work happens in tasks on the workers.
"""
