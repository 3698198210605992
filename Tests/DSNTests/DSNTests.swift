import Testing
@testable import DSN
