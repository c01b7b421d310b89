"""The greetings mesh: a greeter that says hello and a translator that puts it in your language."""
