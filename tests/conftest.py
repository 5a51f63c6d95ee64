pytest_plugins = ["tests.fixtures.app", "tests.fixtures.server", "tests.fixtures.data", "tests.fixtures.moto"]
