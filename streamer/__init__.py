"""streamer"""
